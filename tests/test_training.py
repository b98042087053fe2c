"""The run budget switch, seeding and the timed fit helper."""

import numpy as np
import pytest

from cnn_course import training
from cnn_course.training import RunBudget, current_budget, fit, make_dataset, seed_everything


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("CNN_COURSE_BUDGET", "NBGRADER_EXECUTION", "CNN_COURSE_SMOKE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_default_is_full(clean_env, capsys):
    budget = current_budget()
    assert budget.mode == "full" and budget.is_full
    assert budget.epochs(10) == 10 and budget.n_train(4000) == 4000 and budget.n_train() is None
    assert capsys.readouterr().out.startswith("Run budget: full")


def test_nbgrader_execution_means_grading(clean_env):
    clean_env.setenv("NBGRADER_EXECUTION", "autograde")
    clean_env.setenv("CNN_COURSE_SMOKE", "1")  # grading wins: autograding in CI must stay short
    budget = current_budget(announce=False)
    assert budget.mode == "grading" and "NBGRADER_EXECUTION=autograde" in budget.describe()
    assert budget.epochs(10) == 1 and budget.n_train(4000) == 512 and budget.n_test(1000) == 256
    assert budget.n_train(100) == 100


def test_smoke_switch(clean_env):
    clean_env.setenv("CNN_COURSE_SMOKE", "1")
    budget = current_budget(announce=False)
    assert budget.mode == "smoke"
    assert budget.epochs(5) == 1 and budget.n_train(None) == 1024 and budget.n_test(None) == 512
    clean_env.setenv("CNN_COURSE_SMOKE", "0")
    assert current_budget(announce=False).mode == "full"


def test_explicit_budget_overrides_detection(clean_env):
    clean_env.setenv("NBGRADER_EXECUTION", "autograde")
    clean_env.setenv("CNN_COURSE_BUDGET", "full")
    assert current_budget(announce=False).mode == "full"
    clean_env.setenv("CNN_COURSE_BUDGET", "fast")
    with pytest.raises(ValueError, match="full, grading, smoke"):
        current_budget(announce=False)


def test_pick_and_bad_values():
    assert RunBudget("smoke").pick(100, smoke=3) == 3
    assert RunBudget("grading").pick(100, smoke=3) == 100
    with pytest.raises(ValueError):
        RunBudget("turbo")
    with pytest.raises(ValueError):
        RunBudget().epochs(0)


def test_make_dataset_batches_all_examples_once_per_epoch():
    x = np.arange(10, dtype=np.uint8).reshape(10, 1)
    y = np.arange(10)
    batches = list(make_dataset(x, y, batch_size=4, seed=1))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    seen = np.concatenate([b[0].numpy()[:, 0] for b in batches])
    assert seen.dtype == np.float32 and sorted(seen) == list(range(10))
    with pytest.raises(ValueError, match="10 inputs but 9 labels"):
        make_dataset(x, y[:9], batch_size=4)


def test_fit_records_seconds_per_epoch_and_is_repeatable():
    import keras

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")

    def train():
        seed_everything(7)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return fit(model, x, y, epochs=3, batch_size=16, validation_data=(x, y), verbose=0)

    first, second = train(), train()
    assert len(first.epoch_seconds) == 3 and all(s > 0 for s in first.epoch_seconds)
    assert first.images_per_second > 0
    assert set(first.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    np.testing.assert_allclose(first.history["loss"], second.history["loss"], rtol=1e-6)


def test_fit_needs_a_compiled_model():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(RuntimeError, match="compile the model first"):
        fit(model, np.zeros((4, 2)), np.zeros(4), epochs=1)


def test_cosine_adam_falls_to_zero_over_the_run():
    optimizer = training.cosine_adam(epochs=2, n_train=100, batch_size=32, learning_rate=0.01)
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(4)) == pytest.approx(0.005, rel=1e-3)  # halfway: 2 epochs × 4 updates = 8 steps
    assert float(schedule(8)) == pytest.approx(0.0, abs=1e-9)


def test_summarize_runs_reads_the_last_and_best_epoch():
    class Run:
        history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.8], "val_accuracy": [0.7, 0.6]}
        epoch_seconds = [1.5, 2.5]

    table = training.summarize_runs({"a": Run()})
    assert table.loc["a", "epochs"] == 2
    assert table.loc["a", "validation accuracy"] == 0.6 and table.loc["a", "best validation accuracy"] == 0.7
    assert table.loc["a", "seconds"] == 4.0
