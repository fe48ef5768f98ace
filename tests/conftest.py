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
    path = os.environ.get("CIFAR10_PATH")
    if not path or not os.path.exists(path):
        pytest.skip("real CIFAR-10 not available: set CIFAR10_PATH to cifar-10-python.tar.gz")
    from convmixer_lib.data import load_cifar10

    return load_cifar10(path)
