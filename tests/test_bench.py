"""The benchmark scripts' own logic: how the test suite's time is split, and the time-to-accuracy clock."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"bench_{name}"] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_the_suite_time_is_split_into_nbval_notebooks_round_trips_and_the_rest(tmp_path):
    test_suite = load("test_suite")
    assert test_suite._junit_id("tests/test_x.py::test_a[1]") == ("tests.test_x", "test_a[1]")
    assert test_suite._junit_id("tests/test_x.py::TestA::test_b") == ("tests.test_x.TestA", "test_b")
    junit = tmp_path / "junit.xml"
    junit.write_text("""<?xml version="1.0"?><testsuites><testsuite>
      <testcase classname="source.cnn_mnist.fc_mnist.ipynb" name="Cell 0" time="4.0"/>
      <testcase classname="source.cnn_mnist.fc_mnist.ipynb" name="Cell 1" time="2.0"/>
      <testcase classname="tests.test_cnn_mnist" name="test_round_trip" time="30.0"/>
      <testcase classname="tests.test_data" name="test_loader" time="1.5"><skipped message="no data"/></testcase>
      <testcase classname="tests.test_data" name="test_other" time="0.5"><failure message="x"/></testcase>
    </testsuite></testsuites>""")
    result = test_suite.summarize(junit, 40.0, {("tests.test_cnn_mnist", "test_round_trip")})
    assert result["solution notebooks (nbval, smoke mode): seconds"] == 6
    assert result["notebook round trips (marker: notebooks): seconds"] == 30
    assert result["other tests: seconds"] == 2
    assert result["notebook parts together: seconds"] == 36
    assert result["tests"] == "1 failure, 3 passed, 1 skipped"
    assert result["slowest 1"] == "tests.test_cnn_mnist::test_round_trip (30 s)"


def test_the_clock_stops_training_at_the_target_and_counts_training_time_only():
    import keras

    time_to_accuracy = load("time_to_accuracy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    clock = time_to_accuracy.TestAccuracyClock(x, y, target=0.9)
    model.fit(x, y, epochs=50, batch_size=32, verbose=0, callbacks=[clock])
    assert clock.test_accuracy[-1] >= 0.9 > max(clock.test_accuracy[:-1], default=0)
    assert len(clock.epoch_seconds) == len(clock.test_accuracy) < 50
