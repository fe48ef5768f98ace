import io
import os
import pickle
import tarfile

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
    """A local CIFAR-10 copy: $CIFAR10_PATH, or Keras' download cache."""
    path = os.environ.get("CIFAR10_PATH")
    if path:
        return os.path.exists(path)
    cache = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "cifar-10-batches-py")
    return os.path.isdir(cache)


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
