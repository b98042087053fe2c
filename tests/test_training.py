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


def test_a_grading_run_trains_two_batches_per_epoch_eagerly_and_leaves_the_model_as_it_was(monkeypatch):
    import keras

    monkeypatch.setenv("CNN_COURSE_BUDGET", "grading")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = fit(model, x, y, epochs=2, batch_size=8, validation_data=(x, y), verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2 * training.GRADING_STEPS
    assert len(history.history["val_accuracy"]) == 2 and model.run_eagerly is False
    monkeypatch.setenv("CNN_COURSE_BUDGET", "smoke")
    fit(model, x, y, epochs=1, batch_size=8, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2 * training.GRADING_STEPS + 8


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


def test_one_cycle_adam_rises_to_the_peak_then_falls_to_zero():
    optimizer = training.one_cycle_adam(epochs=2, n_train=100, batch_size=25, max_learning_rate=0.01,
                                        warmup_fraction=0.25, start_fraction=0.1)
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.001)  # 8 updates in all, 2 of them rising
    assert float(schedule(2)) == pytest.approx(0.01)
    assert float(schedule(5)) == pytest.approx(0.005, rel=1e-3)  # halfway down the cosine
    assert float(schedule(8)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="warmup_fraction"):
        training.one_cycle_adam(epochs=1, n_train=10, batch_size=5, warmup_fraction=1.0)


def test_native_bfloat16_reads_the_cpu_flags():
    assert training.native_bfloat16("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 fma\n")
    assert training.native_bfloat16("flags\t\t: fpu amx_tile amx_bf16\n")
    assert not training.native_bfloat16("flags\t\t: fpu sse2 avx2 fma\n")
    assert not training.native_bfloat16("")


def test_training_precision_follows_the_environment_and_rejects_unknown_names(monkeypatch):
    assert training.training_precision("float32", environ={}) == "float32"
    assert training.training_precision("bfloat16", environ={}) == "bfloat16"
    assert training.training_precision("bfloat16", environ={"CNN_COURSE_PRECISION": "float32"}) == "float32"
    monkeypatch.setattr(training, "native_bfloat16", lambda: False)
    assert training.training_precision("auto", environ={}) == "float32"
    monkeypatch.setattr(training, "native_bfloat16", lambda: True)
    assert training.training_precision("auto", environ={}) == "bfloat16"
    with pytest.raises(ValueError, match="float16.*use one of auto, float32, bfloat16"):
        training.training_precision("float16", environ={})


def test_fit_in_bfloat16_trains_float32_weights_and_leaves_the_model_float32():
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6, 6, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int64")
    seed_everything(3)
    inner = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    model = keras.Sequential([keras.Input((6, 6, 1)), inner, keras.layers.ReLU(), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    seen = []

    class ComputeDtype(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append({layer.name: layer.compute_dtype for layer in [*inner.layers, *model.layers[1:]]})

    history = fit(model, x, y, epochs=4, batch_size=32, verbose=0, precision="bfloat16", callbacks=[ComputeDtype()])
    assert history.precision == "bfloat16"
    during = seen[-1]
    assert during.pop(model.layers[-1].name) == "float32"  # the output layer stays float32
    assert set(during.values()) == {"bfloat16"}  # every other layer, nested ones included
    assert history.history["accuracy"][-1] > 0.8  # it learned
    layers_after = [*inner.layers, *model.layers]
    assert {layer.compute_dtype for layer in layers_after} == {"float32"}
    assert {weight.dtype for weight in model.weights} == {"float32"}
    assert model.predict(x[:4], verbose=0).dtype == np.float32
