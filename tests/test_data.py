import os
import tarfile

import keras
import numpy as np
import pytest

from convmixer_lib.choices import CLASS_NAMES
from convmixer_lib.data import (
    load_cifar10,
    load_splits,
    make_augmenter,
    make_dataset,
    split_validation,
)
from conftest import IMAGES_PER_BATCH


def _expected(batches, names):
    data = np.concatenate([batches[n][b"data"] for n in names])
    labels = np.concatenate([batches[n][b"labels"] for n in names])
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.reshape(-1, 1)


def test_reads_the_official_layout_in_order(small_archive):
    path, batches = small_archive
    (x_train, y_train), (x_test, y_test) = load_cifar10(path)
    expected_x, expected_y = _expected(batches, [f"data_batch_{i}" for i in range(1, 6)])
    assert x_train.shape == (5 * IMAGES_PER_BATCH, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.shape == (5 * IMAGES_PER_BATCH, 1) and y_train.dtype == np.uint8
    np.testing.assert_array_equal(x_train, expected_x)
    np.testing.assert_array_equal(y_train, expected_y)
    test_x, test_y = _expected(batches, ["test_batch"])
    np.testing.assert_array_equal(x_test, test_x)
    np.testing.assert_array_equal(y_test, test_y)


def test_pixel_layout_is_channels_last(small_archive):
    path, batches = small_archive
    (x_train, _), _ = load_cifar10(path)
    row = batches["data_batch_1"][b"data"][0]
    assert x_train[0, 0, 1, 0] == row[1]          # red plane, row 0, column 1
    assert x_train[0, 1, 0, 1] == row[1024 + 32]  # green plane, row 1, column 0
    assert x_train[0, 31, 31, 2] == row[3071]     # blue plane, last pixel


def test_reads_the_extracted_folder_and_the_environment_variable(small_archive, tmp_path, monkeypatch):
    path, _ = small_archive
    with tarfile.open(path) as archive:
        archive.extractall(tmp_path, filter="data")
    (x_archive, _), _ = load_cifar10(path)
    (x_folder, _), _ = load_cifar10(tmp_path / "cifar-10-batches-py")
    (x_parent, _), _ = load_cifar10(tmp_path)
    monkeypatch.setenv("CIFAR10_PATH", str(path))
    (x_env, _), _ = load_cifar10()
    for x in (x_folder, x_parent, x_env):
        np.testing.assert_array_equal(x, x_archive)


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere.tar.gz"
    with pytest.raises(FileNotFoundError, match="nowhere.tar.gz"):
        load_cifar10(missing)


def test_truncated_archive_is_refused(small_archive, tmp_path):
    path, _ = small_archive
    truncated = tmp_path / "truncated.tar.gz"
    raw = path.read_bytes()
    truncated.write_bytes(raw[: len(raw) * 9 // 10])
    with pytest.raises(ValueError, match="truncated.tar.gz.*truncated or corrupt"):
        load_cifar10(truncated)


def test_archive_cut_after_the_last_batch_is_refused(small_archive, tmp_path):
    # All six batches complete, only the gzip trailer missing: still refused.
    path, _ = small_archive
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="cut.tar.gz"):
        load_cifar10(cut)


def test_corrupt_archive_is_refused(small_archive, tmp_path):
    path, _ = small_archive
    raw = bytearray(path.read_bytes())
    for offset in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[offset] ^= 0xFF
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt.tar.gz"):
        load_cifar10(corrupt)


def test_not_an_archive_is_refused(tmp_path):
    bogus = tmp_path / "cifar-10-python.tar.gz"
    bogus.write_text("not a tarball")
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz"):
        load_cifar10(bogus)


def test_archive_without_a_batch_is_refused(small_archive, tmp_path):
    path, _ = small_archive
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(path) as source, tarfile.open(partial, "w:gz") as target:
        for member in source:
            if not member.name.endswith("data_batch_3"):
                target.addfile(member, source.extractfile(member))
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(partial)


def test_folder_without_a_batch_is_refused(small_archive, tmp_path):
    path, _ = small_archive
    with tarfile.open(path) as archive:
        archive.extractall(tmp_path, filter="data")
    os.remove(tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path / "cifar-10-batches-py")


def test_split_is_the_examples(small_archive):
    path, _ = small_archive
    (x_all, y_all), _ = load_cifar10(path)
    (x_train, y_train), (x_val, y_val), (x_test, _) = load_splits(path)
    assert len(x_val) == 5000 and len(x_train) == len(x_all) - 5000
    np.testing.assert_array_equal(x_val, x_all[:5000])
    np.testing.assert_array_equal(y_train, y_all[5000:])
    assert len(x_test) == IMAGES_PER_BATCH
    with pytest.raises(ValueError, match="validation_size"):
        split_validation(x_all[:100], y_all[:100])


def test_real_cifar10_splits(real_cifar10):
    (x_train, y_train), (x_test, y_test) = real_cifar10
    (x_tr, _), (x_val, _) = split_validation(x_train, y_train)
    assert (len(x_tr), len(x_val), len(x_test)) == (45_000, 5_000, 10_000)
    assert y_train[:10, 0].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert y_test[:10, 0].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert np.bincount(y_train[:, 0]).tolist() == [5000] * 10
    assert len(CLASS_NAMES) == 10


def test_augmentation_changes_pixels_but_keeps_shape_dtype_and_range():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 32, 32, 3), dtype=np.uint8)
    augmented = keras.ops.convert_to_numpy(make_augmenter(seed=1)(images, training=True))
    assert augmented.shape == images.shape
    assert augmented.min() >= 0 and augmented.max() <= 255
    assert np.array_equal(augmented, np.round(augmented))  # moved, not interpolated
    changed = [not np.array_equal(a, b) for a, b in zip(augmented, images)]
    assert sum(changed) > 48  # most images move
    # A translation shifts in zeros: zero pixels appear though the input had none.
    assert (augmented == 0).all(axis=-1).any(axis=(1, 2)).sum() > 32
    untouched = keras.ops.convert_to_numpy(make_augmenter(seed=1)(images, training=False))
    np.testing.assert_array_equal(untouched, images)


def test_the_flip_is_horizontal_about_half_the_time_and_never_vertical():
    """Red rises left to right, green top to bottom: a horizontal flip reverses
    red, a vertical one would reverse green. Shifts of up to 4 pixels keep the
    middle rows and columns inside the image."""
    ramp = (np.arange(32) * 7 + 10).astype(np.uint8)
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = ramp[None, :]
    image[..., 1] = ramp[:, None]
    augmented = np.asarray(make_augmenter(seed=0)(np.repeat(image[None], 400, 0), training=True))
    red_reversed = augmented[:, 16, 10, 0] > augmented[:, 16, 22, 0]
    green_reversed = augmented[:, 10, 16, 1] > augmented[:, 22, 16, 1]
    assert 0.4 < red_reversed.mean() < 0.6
    assert not green_reversed.any()
    shifted = augmented[:, 16, 16, 0] != image[16, 16, 0]
    assert 0.5 < shifted.mean()  # most copies are translated too


def test_training_dataset_is_augmented_and_keeps_uint8():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (300, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(300).reshape(-1, 1)
    batches = list(make_dataset(images, labels, batch_size=128, training=True, seed=0))
    assert [len(y) for _, y in batches] == [128, 128, 44]
    x, y = batches[0]
    assert x.dtype.name == "uint8" and x.shape == (128, 32, 32, 3)
    order = np.concatenate([y.numpy()[:, 0] for _, y in batches])
    assert sorted(order) == list(range(300)) and order.tolist() != list(range(300))
    assert not np.array_equal(x.numpy(), images[y.numpy()[:, 0]])


def test_evaluation_dataset_keeps_order_and_pixels():
    images = np.random.default_rng(0).integers(0, 256, (130, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(130)
    (x1, y1), (x2, y2) = list(make_dataset(images, labels, batch_size=128))
    np.testing.assert_array_equal(np.concatenate([x1, x2]), images)
    np.testing.assert_array_equal(np.concatenate([y1, y2]), labels)


@pytest.mark.parametrize(
    "images, labels, batch_size, named",
    [
        (np.zeros((4, 32, 32)), np.zeros(4), 2, "images"),
        (np.zeros((4, 32, 32, 1)), np.zeros(4), 2, "images"),
        (np.zeros((4, 32, 32, 3)), np.zeros(3), 2, "labels"),
        (np.zeros((4, 32, 32, 3)), np.zeros(4, "int64"), 0, "batch_size"),
    ],
)
def test_make_dataset_refuses_bad_input(images, labels, batch_size, named):
    with pytest.raises(ValueError, match=named):
        make_dataset(images, labels, batch_size=batch_size)


class _Call:
    """Pickles as a call of `function(*args)`: what a malicious batch holds."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _write_batches(folder, poisoned_batch, payload):
    """Write an extracted CIFAR-10 folder whose `poisoned_batch` unpickles `payload`."""
    import pickle

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": rng.integers(0, 10, 10).tolist(),
                 b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8)}
        if name == poisoned_batch:
            batch[b"data"] = payload
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


def _as_archive(folder, path):
    with tarfile.open(path, "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-py")
    return path


@pytest.mark.parametrize("form", ["archive", "folder"])
def test_a_batch_that_would_run_code_is_refused_before_it_runs(tmp_path, form):
    import pickle

    marker = tmp_path / "marker"
    folder = _write_batches(tmp_path / "cifar-10-batches-py", "data_batch_1",
                            _Call(os.system, f"touch {marker}"))
    path = folder if form == "folder" else _as_archive(folder, tmp_path / "c.tar.gz")
    with pytest.raises(ValueError) as error:
        load_cifar10(path)
    message = str(error.value)
    assert "data_batch_1" in message and str(path) in message
    assert f"{os.system.__module__}.system" in message and "\n" not in message
    assert not marker.exists()
    pickle.loads((folder / "data_batch_1").read_bytes())  # what an ordinary loader does
    assert marker.exists()  # the payload was live


@pytest.mark.parametrize("function, args, name", [
    (open, ("MARKER", "w"), "io.open"),
    (eval, ("1 + 1",), "builtins.eval"),
    (__import__("subprocess").Popen, (["true"],), "subprocess.Popen"),
    (np.load, ("MARKER",), "numpy.load"),
])
def test_every_global_outside_numpys_array_rebuild_is_refused(tmp_path, monkeypatch,
                                                              function, args, name):
    monkeypatch.chdir(tmp_path)
    folder = _write_batches(tmp_path / "cifar-10-batches-py", "test_batch",
                            _Call(function, *args))
    with pytest.raises(ValueError, match=f"'test_batch'.*{name.replace('.', '[.]')}"):
        load_cifar10(folder)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("protocol, core", [(3, "numpy.core"), (3, "numpy._core"),
                                            (4, "numpy._core"), (5, "numpy._core")])
def test_arrays_pickled_by_numpy_1_or_2_still_load(tmp_path, protocol, core):
    """NumPy 1 (and the official files) name numpy.core, NumPy 2 numpy._core."""
    import pickle

    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        written[name] = {b"labels": rng.integers(0, 10, 4).tolist(),
                         b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8)}
        raw = pickle.dumps(written[name], protocol=protocol)
        if protocol == 3:  # names stand as text lines: write NumPy 1's module names
            raw = raw.replace(b"numpy._core.", f"{core}.".encode())
        assert f"{core}.".encode() in raw
        (folder / name).write_bytes(raw)
    (x_train, y_train), (x_test, _) = load_cifar10(folder)
    expected_x, expected_y = _expected(written, [f"data_batch_{i}" for i in range(1, 6)])
    np.testing.assert_array_equal(x_train, expected_x)
    np.testing.assert_array_equal(y_train, expected_y)
    np.testing.assert_array_equal(x_test, _expected(written, ["test_batch"])[0])


def test_offline_without_a_copy_says_how_to_give_one(tmp_path, monkeypatch):
    from urllib.error import URLError

    import keras.src.utils.file_utils as file_utils
    from keras.src.backend import config

    def no_network(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.delenv("CIFAR10_PATH", raising=False)
    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path))  # an empty cache
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    with pytest.raises(ConnectionError) as error:
        load_cifar10()
    message = str(error.value)
    assert "\n" not in message
    assert "CIFAR10_PATH" in message and "cifar-10-python.tar.gz" in message
    assert "Name or service not known" in message


def test_randaugment_recolours_images_that_flips_and_shifts_only_move():
    """Images of four grey levels: moving pixels keeps those levels (and the zeros
    shifted in); RandAugment's colour operations make new ones."""
    rng = np.random.default_rng(0)
    images = rng.choice(np.array([50, 100, 150, 200], np.uint8), (256, 32, 32, 3))
    labels = np.arange(256) % 10

    def new_levels(augment):
        batches = make_dataset(images, labels, 64, training=True, seed=0, augment=augment)
        out = np.concatenate([x for x, _ in batches.as_numpy_iterator()])
        assert out.dtype == np.uint8 and out.shape == images.shape
        return [bool(set(np.unique(o)) - {0, 50, 100, 150, 200}) for o in out]

    assert not any(new_levels("flip-translate"))
    assert np.mean(new_levels("randaugment")) > 0.5
    # torchvision's policy (its shears, shifts and rotations included) runs in
    # tf.data on every Keras backend.
    assert np.mean(new_levels("randaugment-m12")) > 0.5


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="`augment` must be one of.*'crop'"):
        make_dataset(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4), augment="crop")


def test_a_seeded_augmenter_flips_independently_of_its_shifts():
    """One bright pixel left of centre in 512 copies, through a seeded
    augmenter's first call: flipped and unflipped images both come with
    upward and downward shifts."""
    images = np.zeros((512, 32, 32, 3), np.uint8)
    images[:, 16, 10] = 255
    out = np.asarray(make_augmenter(seed=0)(images, training=True))
    rows, columns = [], []
    for image in out:
        found = np.argwhere(image[..., 0] > 0)
        if len(found):
            rows.append(found[0][0])
            columns.append(found[0][1])
    up, flipped = np.array(rows) < 16, np.array(columns) > 16
    for shifted in (up, ~up):
        assert 0.3 < flipped[shifted].mean() < 0.7
