import io
import os
import pickle
import tarfile

import keras
import numpy as np
import pytest

IMAGES_PER_BATCH = 1100  # 5,500 training images: room for the 5,000 validation ones


def _batch(rng, count, label):
    return {
        b"batch_label": label,
        b"labels": rng.integers(0, 10, count).tolist(),
        b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
    }


def write_archive(path, images_per_batch=IMAGES_PER_BATCH, seed=0):
    """Write a CIFAR-10 archive in the official layout, with random images.

    Returns the batches as written, to compare with what the loader reads."""
    rng = np.random.default_rng(seed)
    batches = {f"data_batch_{i}": _batch(rng, images_per_batch, b"training batch")
               for i in range(1, 6)}
    batches["test_batch"] = _batch(rng, images_per_batch, b"testing batch")
    with tarfile.open(path, "w:gz") as archive:
        for name, batch in batches.items():
            raw = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return batches


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz"
    batches = write_archive(path)
    return path, batches


@pytest.fixture(scope="session")
def real_cifar10():
    if not cifar10_available():
        pytest.skip("needs real CIFAR-10: set CIFAR10_PATH to cifar-10-python.tar.gz")
    from convmixer_lib.data import load_cifar10

    return load_cifar10()


def cifar10_available():
    """A local CIFAR-10 copy: $CIFAR10_PATH, or Keras' download cache. With
    $REQUIRE_CIFAR10 set (as CI sets it), a missing copy stops the tests
    instead of skipping those that need it."""
    path = os.environ.get("CIFAR10_PATH")
    if path:
        found = os.path.exists(path)
    else:
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        found = os.path.isdir(os.path.join(home, "datasets", "cifar-10-batches-py"))
    if not found and os.environ.get("REQUIRE_CIFAR10"):
        raise pytest.UsageError(
            "REQUIRE_CIFAR10 is set but no CIFAR-10 copy was found: set CIFAR10_PATH to "
            "cifar-10-python.tar.gz or download it into Keras' cache first.")
    return found


def pytest_collection_modifyitems(config, items):
    """Skip the notebooks that read CIFAR-10 (or chapter 3's run) when no copy is here."""
    if cifar10_available():
        return
    skip = pytest.mark.skip(
        reason="needs real CIFAR-10: set CIFAR10_PATH to cifar-10-python.tar.gz"
    )
    for item in items:
        path = str(item.path)
        if path.endswith(".ipynb"):
            with open(path) as f:
                source = f.read()
            if "CIFAR10_PATH" in source or "RUN_DIR" in source:
                item.add_marker(skip)


TINY = {"filters": 16, "depth": 1, "kernel_size": 3, "patch_size": 4}


def easy_data(count, seed):
    """Images whose class is their mean colour: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 40, (count, 32, 32, 3)) + (labels * 20)[:, None, None, None]
    return images.astype(np.uint8), labels.reshape(-1, 1).astype(np.uint8)


def train_tiny(run_dir, epochs, callbacks=(), model=TINY, augment="flip-translate", **options):
    """Train a tiny ConvMixer on 512 easy images (batches of 64) into `run_dir`.

    Training is repeatable to the bit only with `augment="none"`: the random
    augmentation runs in parallel threads, which draw random numbers in any order.

    `options` go to `run_experiment` (learning_rate 3e-3 and seed 0 unless given).
    Returns `(model, history, metrics)`."""
    from convmixer_lib.data import make_dataset
    from convmixer_lib.model import build_convmixer
    from convmixer_lib.training import run_experiment

    keras.utils.set_random_seed(0)
    x, y = easy_data(512, 0)
    x_val, y_val = easy_data(128, 1)
    built = build_convmixer(**model)
    options = {"learning_rate": 3e-3, "seed": 0, "settings": {"train_images": 512},
               "verbose": 0, **options}
    history, metrics = run_experiment(
        built,
        make_dataset(x, y, batch_size=64, training=True, seed=0, augment=augment),
        make_dataset(x_val, y_val, batch_size=64),
        easy_data(128, 2),
        run_dir,
        epochs=epochs,
        callbacks=callbacks,
        **options,
    )
    return built, history, metrics



class StopAtEpoch(keras.callbacks.Callback):
    """Interrupt training (KeyboardInterrupt) as epoch `epoch` (0-based) begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt
