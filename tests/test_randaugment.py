"""RandAugment's operations at the strength the library uses, each measured on
images with known answers, and Keras' RandAugment layer as it really behaves."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from convmixer_lib.choices import rand_augment_magnitude
from convmixer_lib import data
from convmixer_lib.data import make_dataset
from convmixer_lib.randaugment import (
    OPERATIONS,
    SIGNED,
    apply_operation,
    image_changes,
    best_correlations,
    operation_effects,
    operation_strengths,
    rand_augment,
)

MAGNITUDE = 12  # locuslab's, and the long recipe's


def natural_images(count, seed=0):
    """Smooth colour gradients with a little texture: images a colour or a shape
    operation changes in a measurable way, with a few hundred distinct values."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32] / 31
    images = []
    for _ in range(count):
        a, b, c = rng.uniform(-1, 1, (3, 3))
        base = 128 + 60 * (a * x[..., None] + b * y[..., None]) + 30 * np.sin(6 * c * x[..., None])
        images.append(base + rng.normal(0, 8, (32, 32, 3)))
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def test_strengths_at_magnitude_12_are_torchvisions():
    strengths = operation_strengths(MAGNITUDE)
    assert strengths["shear_x"] == pytest.approx(0.12)
    assert strengths["translate_x"] == 5  # 150/331 of 32 pixels × 12/30, truncated
    assert strengths["rotate"] == pytest.approx(12.0)
    assert strengths["brightness"] == pytest.approx(0.36)
    assert strengths["posterize"] == 6
    assert strengths["solarize"] == pytest.approx(153.0)
    assert set(strengths) == set(OPERATIONS)
    # The scale's ends: nothing at 0, torchvision's maxima at 30.
    weakest, strongest = operation_strengths(0), operation_strengths(30)
    assert (weakest["posterize"], strongest["posterize"]) == (8, 4)
    assert (weakest["solarize"], strongest["solarize"]) == (255, 0)
    assert (weakest["rotate"], strongest["rotate"]) == (0, 30)
    assert (weakest["translate_x"], strongest["translate_x"]) == (0, 14)
    assert strongest["shear_y"] == pytest.approx(0.3)
    assert strongest["contrast"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="`magnitude` must be a number from 0 to 30, got 31"):
        operation_strengths(31)


def test_posterize_keeps_6_bits_and_solarize_inverts_only_values_from_153():
    image = np.arange(256, dtype=np.uint8).repeat(12)[: 32 * 32 * 3].reshape(32, 32, 3)
    posterized = apply_operation("posterize", image, MAGNITUDE).numpy()
    np.testing.assert_array_equal(posterized, image // 4 * 4)
    solarized = apply_operation("solarize", image, MAGNITUDE).numpy()
    np.testing.assert_array_equal(solarized, np.where(image >= 153, 255 - image, image))


def test_translations_move_whole_pixels_and_shift_in_zeros():
    image = natural_images(1)[0]
    for sign in (1.0, -1.0):
        out = apply_operation("translate_x", image, MAGNITUDE, sign).numpy()
        if sign > 0:
            np.testing.assert_array_equal(out[:, 5:], image[:, :-5])
            assert not out[:, :5].any()
        else:
            np.testing.assert_array_equal(out[:, :-5], image[:, 5:])
    out = apply_operation("translate_y", image, MAGNITUDE).numpy()
    np.testing.assert_array_equal(out[5:], image[:-5])


def test_rotation_turns_about_the_centre_by_12_degrees():
    image = np.zeros((33, 33, 3), np.uint8)  # odd size: a pixel at the centre
    image[16, 26] = 255  # 10 pixels right of the centre
    out = apply_operation("rotate", image, MAGNITUDE).numpy()
    rows, cols, _ = np.nonzero(out)
    # 10 · (cos 12°, sin 12°) = (9.78, 2.08) pixels from the centre.
    assert set(cols) == {26} and set(np.abs(rows - 16)) == {2}


def test_shears_keep_the_top_left_corner_and_slide_the_rest():
    image = natural_images(1)[0]
    out = apply_operation("shear_x", image, 30).numpy()  # factor 0.3: x' = x + 0.3 y
    np.testing.assert_array_equal(out[0], image[0])
    np.testing.assert_array_equal(out[10, :-3], image[10, 3:])
    out = apply_operation("shear_y", image, 30, -1.0).numpy()  # y' = y - 0.3 x
    np.testing.assert_array_equal(out[:, 0], image[:, 0])
    np.testing.assert_array_equal(out[3:, 10], image[:-3, 10])


PIL_OPERATIONS = {
    "brightness": lambda im, s: ImageEnhance.Brightness(im).enhance(1 + s),
    "color": lambda im, s: ImageEnhance.Color(im).enhance(1 + s),
    "sharpness": lambda im, s: ImageEnhance.Sharpness(im).enhance(1 + s),
    "posterize": lambda im, s: ImageOps.posterize(im, 6),
    "solarize": lambda im, s: ImageOps.solarize(im, 153),
    "auto_contrast": lambda im, s: ImageOps.autocontrast(im),
    "equalize": lambda im, s: ImageOps.equalize(im),
}


@pytest.mark.parametrize("name", PIL_OPERATIONS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_operations_compute_what_pil_computes_for_torchvision(name, sign):
    """torchvision's RandAugment on a PIL image calls these PIL functions; at
    magnitude 12 the library gives the same pixels, within one level: PIL
    computes the grey and blurred images of its blends in whole values, which
    moves about one pixel value in ten by one level."""
    for image in natural_images(4, seed=3):
        expected = np.asarray(PIL_OPERATIONS[name](Image.fromarray(image), 0.36 * sign))
        out = apply_operation(name, image, MAGNITUDE, sign).numpy()
        np.testing.assert_allclose(out, expected, atol=1, err_msg=name)
        assert np.mean(out != expected) < 0.15, name


def test_contrast_blends_with_the_mean_grey():
    # PIL rounds the mean grey to a whole value; the library keeps it exact.
    image = natural_images(1)[0]
    grey = np.asarray(Image.fromarray(image).convert("L"), np.float64).mean()
    out = apply_operation("contrast", image, MAGNITUDE).numpy()
    np.testing.assert_allclose(out, np.clip(np.floor(grey + 1.36 * (image - grey)), 0, 255),
                               atol=1)


def test_auto_contrast_stretches_each_channel_to_the_full_range():
    image = (natural_images(1)[0] // 2 + 40).astype(np.uint8)  # values 40 to 167
    stretched = apply_operation("auto_contrast", image, MAGNITUDE).numpy()
    assert (stretched.min(axis=(0, 1)) == 0).all() and (stretched.max(axis=(0, 1)) == 255).all()


def test_no_operation_at_magnitude_12_hides_the_picture():
    """Measured on images with about 160 values each: no operation inverts the
    picture as a whole (Keras' factor-0.1 solarization gives about -0.96 on
    CIFAR-10) or leaves it a handful of values (its posterization: 2). The
    lowest correlation is solarization's (about 0.19 here), which inverts
    the brightest third of these images' pixels."""
    effects = operation_effects(natural_images(8), MAGNITUDE)
    for name, effect in effects.items():
        assert effect["correlation"] > 0.1, name
        assert effect["values"] > 30, name
    assert effects["identity"]["change"] == 0
    for name in ("color", "contrast", "sharpness", "posterize"):
        assert effects[name]["change"] < 40, name
    assert all(effects[name]["change"] > 0 for name in SIGNED)


def test_the_policy_draws_operations_for_every_image():
    """64 copies of one image through the pipeline: RandAugment at magnitude 12
    makes many different images of it (an operation drawn per image, not per
    batch), each as a uint8 image of the same shape."""
    image = natural_images(1)[0]
    images, labels = np.repeat(image[None], 64, 0), np.zeros(64)
    batches = make_dataset(images, labels, 64, training=True, seed=0, augment="randaugment-m12")
    (out, _), = batches.as_numpy_iterator()
    assert out.dtype == np.uint8 and out.shape == images.shape
    unflipped = [o if np.abs(o.astype(int) - image).mean() < np.abs(o[:, ::-1].astype(int)
                 - image).mean() else o[:, ::-1] for o in out]
    assert len({o.tobytes() for o in unflipped}) > 32


def test_the_flip_only_variant_mirrors_after_randaugment_and_never_shifts(monkeypatch):
    """With RandAugment replaced by the identity, "randaugment-m12-flip" gives
    every image back as it was or mirrored, both kinds among 64 copies;
    "randaugment-m12" shifts most of them as well."""
    monkeypatch.setattr(data, "rand_augment", lambda image, magnitude: image)
    image = natural_images(1)[0]
    images, labels = np.repeat(image[None], 64, 0), np.zeros(64)

    def augmented(augment):
        (out, _), = make_dataset(images, labels, 64, training=True, seed=0,
                                 augment=augment).as_numpy_iterator()
        return out

    as_is = [(out == image).all() for out in augmented("randaugment-m12-flip")]
    mirrored = [(out == image[:, ::-1]).all() for out in augmented("randaugment-m12-flip")]
    assert all(a or m for a, m in zip(as_is, mirrored)) and any(as_is) and any(mirrored)
    moved = [not ((out == image).all() or (out == image[:, ::-1]).all())
             for out in augmented("randaugment-m12")]
    assert sum(moved) > 32


def test_augmentation_names_are_checked():
    assert rand_augment_magnitude("randaugment-m12") == 12
    assert rand_augment_magnitude("randaugment-m12-flip") == 12
    assert rand_augment_magnitude("flip-translate") is None
    for bad in ("randaugment-m31", "randaugment-m", "randaugment-mx", "crop",
                "randaugment-m12-flop", "randaugment-m-flip", "randaugment-m31-flip",
                "12-flip", "randaugment-m012", "randaugment-m\u0663", "randaugment-m\u00b2"):
        with pytest.raises(ValueError, match="`augment` must be one of"):
            rand_augment_magnitude(bad)


def test_keras_randaugment_factor_makes_posterize_and_solarize_strongest():
    """What Keras' `RandAugment(factor=0.1)` (Keras 3.15.1) passes to two of its
    operations, as chapter 4 reports: posterization keeping 1 bit per channel,
    and solarization with thresholds of at most 25.5 (and up to 25.5 added
    first), which turns the picture into its negative. If a Keras release changes this, the chapter's account must too."""
    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.1, seed=0)
    image = natural_images(1)[0][None].astype("float32")
    posterized = keras.ops.convert_to_numpy(layer.random_posterization(image, training=True))
    assert len(np.unique(posterized)) <= 2  # 1 bit: 0 or 128
    solarized = keras.ops.convert_to_numpy(layer.solarization(image, training=True))
    assert np.corrcoef(solarized.ravel(), image.ravel())[0, 1] < -0.9  # a negative


def test_best_correlations_see_through_flips_and_shifts_but_not_negatives():
    originals = natural_images(3)
    moved = np.stack([np.roll(originals[0][:, ::-1], 3, axis=1), originals[1],
                      255 - originals[2]])
    best = best_correlations(originals, moved)
    assert best[0] > 0.99 and best[1] == pytest.approx(1.0)
    assert best[2] < 0  # a negative: no flip or shift brings the picture back


def test_image_changes_measure_change_correlation_and_values():
    images = natural_images(2)
    same = image_changes(images, images)
    assert same["change"] == 0 and same["correlation"] == pytest.approx(1.0)
    negative = image_changes(images, 255 - images.astype(int))
    assert negative["correlation"] == pytest.approx(-1.0)
    assert negative["values"] == same["values"]
    flat = image_changes(images, np.full_like(images, 128))
    assert flat["values"] == 1 and flat["correlation"] == 0.0  # nothing of the picture left
    assert flat["change"] == pytest.approx(np.abs(images - 128.0).mean())


def test_every_operation_is_drawn_and_two_are_chained():
    """400 single draws of one image each match one operation's result, and
    together all 14 (a missing one would have probability 3e-13); with
    num_ops=2 some results match no single operation: the second works on
    the first's output."""
    image = natural_images(1, seed=5)[0]
    singles = {}
    for name in OPERATIONS:
        for sign in ((1.0, -1.0) if name in SIGNED else (1.0,)):
            singles.setdefault(apply_operation(name, image, MAGNITUDE, sign).numpy()
                               .astype(np.uint8).tobytes(), set()).add(name)
    drawn = set()
    for _ in range(400):
        out = rand_augment(tf.constant(image), MAGNITUDE, num_ops=1).numpy().tobytes()
        assert out in singles
        drawn |= singles[out]
    assert drawn == set(OPERATIONS)
    chained = [rand_augment(tf.constant(image), MAGNITUDE).numpy().tobytes() not in singles
               for _ in range(50)]
    assert np.mean(chained) > 0.5
