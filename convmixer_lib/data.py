"""CIFAR-10: loading, the example's train/validation split, and tf.data pipelines."""

import gzip
import importlib
import io
import os
import pickle
import tarfile
import zlib

import keras
import numpy as np
import tensorflow as tf

from .checks import SEED_LIMIT, check_cifar10_path, check_int, check_positive_int
from .choices import FLIP_ONLY_SUFFIX, VALIDATION_SIZE, rand_augment_magnitude
from .randaugment import rand_augment

BATCH_NAMES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_FOLDER = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # Keras' source

# The only globals a CIFAR-10 batch needs to rebuild its uint8 array: the official
# files (pickled by NumPy 1 under Python 2) name `numpy.core`, files pickled by
# NumPy 2 name `numpy._core`, and pickle protocol 5 uses `_frombuffer`.
_ALLOWED_GLOBALS = {
    (f"{core}.{module}", name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside what a CIFAR-10 batch needs."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickle a CIFAR-10 batch without running code from it.

    A pickle can name any importable function and have it called while it is
    read (`os.system`, `eval`, ...). This unpickler resolves only the NumPy
    globals that rebuild an array and its dtype, and refuses every other name
    before anything is imported or called.
    """

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        if module == "numpy":
            return getattr(np, name)
        # numpy.core under NumPy 1, numpy._core under NumPy 2, whichever the file names.
        core = "numpy._core" if hasattr(np, "_core") else "numpy.core"
        submodule = importlib.import_module(f"{core}.{module.rsplit('.', 1)[1]}")
        return getattr(submodule, name)


def load_cifar10(path=None):
    """Load CIFAR-10 exactly as `keras.datasets.cifar10.load_data()` returns it.

    Args:
        path: the official archive `cifar-10-python.tar.gz`, its extracted
            `cifar-10-batches-py/` folder, or a folder holding either. When None,
            the environment variable `CIFAR10_PATH` is used if set; otherwise
            Keras downloads the dataset.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 images of shape
        `(50000, 32, 32, 3)` and `(10000, 32, 32, 3)`, uint8 labels 0–9 of shape
        `(50000, 1)` and `(10000, 1)`, in the archive's order.

    Batches are unpickled with only the NumPy globals an image array needs:
    a pickle that names any other function (one that would run code as it
    is read) is refused before that function is called.

    Raises:
        FileNotFoundError: if `path` does not exist or lacks a batch file.
        ValueError: if the archive is truncated or corrupt, a batch names a
            refused global, or a batch does not hold 32×32 RGB images with
            labels 0–9. Nothing is returned then.
        ConnectionError: if no `path` or `CIFAR10_PATH` is given and Keras
            can neither download the dataset nor find it in its cache.
    """
    path = check_cifar10_path(path)
    if path is None:
        return _download()
    if os.path.isdir(path):
        batches = _read_folder(path)
    else:
        batches = _read_archive(path)
    train = [_decode(path, name, batches[name]) for name in BATCH_NAMES[:5]]
    x_test, y_test = _decode(path, "test_batch", batches["test_batch"])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return (x_train, y_train), (x_test, y_test)


def _download():
    """Keras' loader (download, or its cache), with a one-line error when offline."""
    try:
        return keras.datasets.cifar10.load_data()
    except Exception as error:  # Keras raises a bare Exception on a failed download
        if "URL fetch failure" not in str(error):
            raise
        raise ConnectionError(
            "No local CIFAR-10 copy was given (set CIFAR10_PATH or pass `path` "
            "to cifar-10-python.tar.gz) and the download from "
            f"{CIFAR10_URL} failed ({' '.join(str(error).split())})."
        ) from None


def _read_folder(path):
    for folder in (path, os.path.join(path, _FOLDER)):
        if os.path.exists(os.path.join(folder, "test_batch")):
            break
        archive = os.path.join(folder, "cifar-10-python.tar.gz")
        if os.path.isfile(archive):
            return _read_archive(archive)
    batches = {}
    for name in BATCH_NAMES:
        file = os.path.join(folder, name)
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"CIFAR-10 folder {path!r} lacks {name!r}: expected "
                f"{', '.join(BATCH_NAMES)} in it or in {_FOLDER}/ inside it."
            )
        with open(file, "rb") as f:
            batches[name] = f.read()
    return batches


def _read_archive(path):
    """Read every batch from the .tar.gz, to its end, so gzip checks its CRC."""
    batches = {}
    try:
        with gzip.open(path, "rb") as stream:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    name = os.path.basename(member.name)
                    if member.isfile() and name in BATCH_NAMES:
                        batches[name] = archive.extractfile(member).read()
            while stream.read(1 << 20):  # the rest, up to the CRC check
                pass
    except (OSError, EOFError, tarfile.TarError, zlib.error) as error:
        raise ValueError(
            f"CIFAR-10 archive {path!r} is truncated or corrupt ({error}); "
            "expected the complete cifar-10-python.tar.gz."
        ) from error
    missing = [name for name in BATCH_NAMES if name not in batches]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 archive {path!r} lacks {', '.join(missing)}: expected "
            f"{_FOLDER}/ with {', '.join(BATCH_NAMES)}."
        )
    return batches


def _decode(path, name, raw):
    """Turn one pickled batch into uint8 images (n, 32, 32, 3) and labels (n, 1)."""
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except _RefusedGlobal as error:
        raise ValueError(
            f"CIFAR-10 batch {name!r} in {path!r} names the Python global "
            f"{error}, which a CIFAR-10 batch never needs; refused without "
            "calling it (a pickle can run code when it is read)."
        ) from None
    except Exception as error:
        raise ValueError(
            f"CIFAR-10 batch {name!r} in {path!r} cannot be read ({error!r}); "
            "expected a pickled dict with b'data' and b'labels'."
        ) from error
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"CIFAR-10 batch {name!r} in {path!r} has data {data.dtype} "
            f"{data.shape}; expected uint8 of shape (n, 3072)."
        )
    if labels.shape != (len(data),) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(
            f"CIFAR-10 batch {name!r} in {path!r} has {labels.shape} labels for "
            f"{len(data)} images; expected one label 0–9 per image."
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.uint8).reshape(-1, 1)


def split_validation(x_train, y_train, validation_size=VALIDATION_SIZE):
    """The example's split: the first `validation_size` training images validate.

    Returns:
        `(x_train, y_train), (x_val, y_val)` with `len(x_val) == validation_size`.
    """
    if (isinstance(validation_size, bool) or not isinstance(validation_size, int)
            or not 0 < validation_size < len(x_train)):
        raise ValueError(
            f"`validation_size` must be between 1 and {len(x_train) - 1} "
            f"(the number of training images less one), got {validation_size}."
        )
    return (
        (x_train[validation_size:], y_train[validation_size:]),
        (x_train[:validation_size], y_train[:validation_size]),
    )


def make_augmenter(seed=None, translate=True):
    """Random augmentation of a batch of images, active when `training=True`.

    A random translation of up to 4 pixels in each direction, with zeros shifted
    in (left out if `translate` is False), and a random horizontal flip, each
    drawn for every image. Pixel values are moved, never interpolated; the
    layers return floats.

    The translation is Keras' `RandomTranslation(0.125, 0.125)`: for each axis
    it draws a shift uniformly between -4 and 4 pixels and rounds it to a whole
    pixel, so shifts of -4 and 4 come up half as often (1/16 each) as each shift
    from -3 to 3 (1/8). It is therefore not the same as padding by 4 and
    cropping 32×32 at a random offset, which gives each of the nine shifts 1/9.

    With a `seed`, the flip is seeded with `seed + 1` (0 after the largest seed): two layers with one
    seed start from the same random state, and the flip would reuse the
    vertical shift's first draws.
    """
    if seed is not None:
        check_int("seed", seed, 0, SEED_LIMIT)
    translation = keras.layers.RandomTranslation(
        0.125, 0.125, fill_mode="constant", interpolation="nearest", seed=seed)
    flip = keras.layers.RandomFlip(
        "horizontal", seed=None if seed is None else (seed + 1) % SEED_LIMIT)
    return keras.layers.Pipeline([translation, flip] if translate else [flip],
                                 name="augmentation")


def check_images(images, labels=None, image_size=None, num_classes=None):
    """Raise ValueError unless `images` has shape (n, image_size, image_size, 3)
    (any square size if `image_size` is None) and `labels`, when given, holds one
    whole number >= 0 per image (integer or float), below `num_classes` if given
    (class indices)."""
    shape = getattr(images, "shape", None)
    size = image_size or (shape[1] if shape is not None and len(shape) == 4 else "s")
    if shape is None or len(shape) != 4 or tuple(shape[1:]) != (size, size, 3):
        raise ValueError(
            f"`images` must have shape (n, {size}, {size}, 3), got {shape}."
        )
    if labels is not None and len(labels) != shape[0]:
        raise ValueError(
            f"`labels` must hold one label per image ({shape[0]}), got {len(labels)}."
        )
    values = np.asarray(labels) if labels is not None else None
    limit = num_classes if num_classes is not None else float("inf")
    numeric = values is not None and values.dtype.kind in "iuf"
    if values is not None and values.size and (
            not numeric or np.any(values != np.round(values))
            or values.min() < 0 or values.max() >= limit):
        expected = ("whole numbers >= 0" if num_classes is None
                    else f"class indices from 0 to {num_classes - 1}")
        got = (f"{values.dtype} values from {values.min()} to {values.max()}" if numeric
               else f"{values.dtype} labels")
        raise ValueError(f"`labels` must be {expected}, got {got}.")


# "randaugment": Keras' `RandAugment` layer with 2 of its 11 operations and
# `factor` 0.1, which the book's first long run used. Its factor is not a
# strength: it makes posterization keep 1 bit and solarization invert almost
# every pixel (chapter 4).
RAND_AUGMENT = {"num_ops": 2, "factor": 0.1}
# Keras draws the operations once per call: calling it on groups of 16 images
# rather than on a whole batch varies them within a batch.
RAND_AUGMENT_GROUP = 16


def make_dataset(images, labels, batch_size=128, training=False, seed=None,
                 augment="flip-translate"):
    """A `tf.data.Dataset` of `(images, labels)` batches, as in the example.

    Args:
        images: uint8 array `(n, 32, 32, 3)`, values 0–255.
        labels: int array `(n,)` or `(n, 1)` of class indices.
        batch_size: images per batch; the last batch may be smaller.
        training: if True, shuffle all `n` images anew every epoch and augment
            every batch; if False, keep the order and the images.
        seed: seed of the shuffle and augmentation, for repeatable runs.
        augment: how training batches are augmented: "flip-translate"
            (`make_augmenter`), "randaugment" (Keras' `RandAugment` with
            `RAND_AUGMENT`, on groups of `RAND_AUGMENT_GROUP` images, then
            `make_augmenter`), "randaugment-m<magnitude>" (torchvision's
            RandAugment at that magnitude, 0 to 30, on every image, see
            `randaugment.rand_augment`, then `make_augmenter`),
            "randaugment-m<magnitude>-flip" (the same, then flips alone) or
            "none".

    Returns:
        A prefetching dataset of uint8 image batches `(batch, 32, 32, 3)` and
        their labels.
    """
    check_images(images, labels)
    check_positive_int("batch_size", batch_size)
    if seed is not None:
        check_int("seed", seed, 0, SEED_LIMIT)
    magnitude = rand_augment_magnitude(augment)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if training and magnitude is not None:
        dataset = dataset.map(lambda x, y: (rand_augment(x, magnitude), y),
                              num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment == "randaugment":
        dataset = _rand_augmented_batches(dataset, len(images), batch_size, seed)
    else:
        dataset = dataset.batch(batch_size)
    if training and augment != "none":
        augmenter = make_augmenter(seed, translate=not augment.endswith(FLIP_ONLY_SUFFIX))
        dataset = dataset.map(
            lambda x, y: (tf.cast(augmenter(x, training=True), x.dtype), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _rand_augmented_batches(dataset, count, batch_size, seed):
    """Batches of `dataset`'s `count` images, each RandAugment-ed in its group."""
    keras_rand_augment = keras.layers.RandAugment(value_range=(0, 255), seed=seed,
                                                  **RAND_AUGMENT)

    def to_uint8(images):  # interpolated, recoloured floats in 0–255
        return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)

    dataset = dataset.batch(RAND_AUGMENT_GROUP).map(
        lambda x, y: (to_uint8(keras_rand_augment(x, training=True)), y),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    batches = -(-count // batch_size)  # unbatch() forgets how many there are
    return dataset.unbatch().batch(batch_size).apply(
        tf.data.experimental.assert_cardinality(batches))


def load_splits(path=None, validation_size=VALIDATION_SIZE):
    """CIFAR-10 in the example's three splits (see `load_cifar10` for `path`).

    Returns:
        `(x_train, y_train), (x_val, y_val), (x_test, y_test)`: 45,000, 5,000
        and 10,000 uint8 images `(n, 32, 32, 3)` with uint8 labels `(n, 1)`.
    """
    (x_train, y_train), test = load_cifar10(path)
    train, validation = split_validation(x_train, y_train, validation_size)
    return train, validation, test
