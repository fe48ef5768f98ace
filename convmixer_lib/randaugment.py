"""RandAugment as torchvision implements it, at a strength that means what it says.

locuslab trains ConvMixer-256/8 on CIFAR-10 with torchvision's
`RandAugment(num_ops=2, magnitude=12)`: every image gets 2 operations, each
drawn from the 14 of `OPERATIONS`, at strength 12 on a scale of 0 to 30
(`MAX_MAGNITUDE`), in a random direction where an operation has one.
`operation_strengths` gives each operation's strength at a magnitude, as
torchvision defines it; `rand_augment` applies the policy to one image. The
operations follow torchvision 0.12 and later on PIL images (locuslab's
path): shears about the top-left corner, nearest-pixel sampling with zeros
outside, results rounded down to whole values. The draws are TensorFlow's
stateful random numbers: a `make_dataset` seed repeats the shuffle, not
these draws.

Keras' `RandAugment` layer is not this policy: its single `factor` makes
posterization and solarization stronger as it gets smaller (chapter 4
measures it), so the library keeps it only as the `"randaugment"` choice of
`make_dataset` that the book's first long run used.
"""

import numpy as np
import tensorflow as tf

from .checks import check_int
from .choices import MAX_MAGNITUDE

OPERATIONS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate",
    "brightness", "color", "contrast", "sharpness", "posterize", "solarize",
    "auto_contrast", "equalize",
)  # fmt: skip
# Operations whose strength applies in either direction, each equally likely.
SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate",
          "brightness", "color", "contrast", "sharpness"}


def operation_strengths(magnitude, image_size=32):
    """Each operation's strength at `magnitude` (0 to 30), as torchvision's.

    Returns:
        A dict over `OPERATIONS` (None where an operation has no strength):
        `shear_x`, `shear_y`: shear factor (tangent of the angle);
        `translate_x`, `translate_y`: shift in whole pixels (at most 150/331
        of `image_size`, truncated); `rotate`: degrees (at most 30);
        `brightness`, `color`, `contrast`, `sharpness`: how far the
        enhancement factor moves from 1 (at most 0.9); `posterize`: bits kept
        per channel (8 down to 4); `solarize`: the threshold from which pixel
        values are inverted (255 down to 0).

    Raises:
        ValueError: if `magnitude` is not a number from 0 to 30.
    """
    if not (isinstance(magnitude, (int, float)) and 0 <= magnitude <= MAX_MAGNITUDE):
        raise ValueError(f"`magnitude` must be a number from 0 to {MAX_MAGNITUDE}, "
                         f"got {magnitude!r}.")
    m = magnitude / MAX_MAGNITUDE
    enhance = 0.9 * m
    return {
        "identity": None,
        "shear_x": 0.3 * m, "shear_y": 0.3 * m,
        "translate_x": int(150 / 331 * image_size * m),
        "translate_y": int(150 / 331 * image_size * m),
        "rotate": 30 * m,
        "brightness": enhance, "color": enhance, "contrast": enhance, "sharpness": enhance,
        "posterize": 8 - round(4 * m),
        "solarize": 255 * (1 - m),
        "auto_contrast": None, "equalize": None,
    }


def _grayscale(image):
    """ITU-R 601-2 luma, as PIL and torchvision compute it, shape (h, w, 1)."""
    return tf.reduce_sum(image * tf.constant([0.2989, 0.587, 0.114]), -1, keepdims=True)


def _blend(image, degenerate, factor):
    """PIL's ImageEnhance: `degenerate + factor * (image - degenerate)`, in 0–255."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _smoothed(image):
    """PIL's SMOOTH filter (weights 1, centre 5, over 13) inside the border; the
    border pixels kept, as torchvision's `adjust_sharpness` does."""
    kernel = np.ones((3, 3), np.float32)
    kernel[1, 1] = 5
    kernel = tf.constant(np.tile((kernel / 13)[:, :, None, None], (1, 1, 3, 1)))
    inner = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    inner = tf.pad(inner, [[1, 1], [1, 1], [0, 0]])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    border = tf.pad(tf.zeros((height - 2, width - 2, 3)), [[1, 1], [1, 1], [0, 0]],
                    constant_values=1.0)
    return border * image + (1 - border) * inner


def _equalize(image):
    """PIL's `ImageOps.equalize` (which torchvision's `equalize` follows): each
    channel's values mapped through its cumulative histogram, counted before
    each value and spread over 0–255; a channel of one value is kept."""
    channels = []
    for c in range(3):
        values = tf.cast(image[..., c], tf.int32)
        histogram = tf.math.bincount(values, minlength=256, maxlength=256)
        total = tf.reduce_sum(histogram)
        step = (total - tf.gather(histogram, tf.reduce_max(values))) // 255
        before = tf.cumsum(histogram, exclusive=True)
        table = tf.minimum((step // 2 + before) // tf.maximum(step, 1), 255)
        mapped = tf.gather(table, values)
        channels.append(tf.where(step > 0, mapped, values))
    return tf.cast(tf.stack(channels, axis=-1), tf.float32)


def _affine(image, row_x, row_y):
    """Sample `image` at input coordinates `row_x · (x, y, 1)`, `row_y · (x, y, 1)`
    of each output pixel (x, y), nearest pixel, zeros outside (torchvision's)."""
    transform = tf.cast(tf.stack([*row_x, *row_y, 0.0, 0.0]), tf.float32)
    # TensorFlow's op (what Keras' affine_transform calls on its TensorFlow
    # backend), so that the policy runs in tf.data on any Keras backend.
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")[0]


def _auto_contrast(image):
    """Stretch each channel to 0–255 (unchanged where a channel is constant)."""
    low = tf.reduce_min(image, axis=(0, 1), keepdims=True)
    high = tf.reduce_max(image, axis=(0, 1), keepdims=True)
    stretched = (image - low) * 255.0 / tf.maximum(high - low, 1.0)
    return tf.where(high > low, stretched, image)


def _operation(name, image, strength, sign):
    """Operation `name` of `OPERATIONS` on one float32 image (h, w, 3) in 0–255."""
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    centre_y, centre_x = (size[0] - 1) / 2, (size[1] - 1) / 2
    s = sign * strength if name in SIGNED else strength
    if name == "identity":
        return image
    if name == "shear_x":  # about the top-left corner: x' = x + s y
        return _affine(image, [1.0, s, 0.0], [0.0, 1.0, 0.0])
    if name == "shear_y":
        return _affine(image, [1.0, 0.0, 0.0], [s, 1.0, 0.0])
    if name == "translate_x":
        return _affine(image, [1.0, 0.0, -s], [0.0, 1.0, 0.0])
    if name == "translate_y":
        return _affine(image, [1.0, 0.0, 0.0], [0.0, 1.0, -s])
    if name == "rotate":  # about the image's centre
        angle = s * np.pi / 180
        cos, sin = tf.cos(angle), tf.sin(angle)
        return _affine(image, [cos, -sin, centre_x - cos * centre_x + sin * centre_y],
                       [sin, cos, centre_y - sin * centre_x - cos * centre_y])
    if name == "brightness":
        return _blend(image, tf.zeros_like(image), 1 + s)
    if name == "color":
        return _blend(image, _grayscale(image), 1 + s)
    if name == "contrast":
        return _blend(image, tf.reduce_mean(_grayscale(image)), 1 + s)
    if name == "sharpness":
        return _blend(image, _smoothed(image), 1 + s)
    if name == "posterize":  # keep the `strength` highest bits of each value
        step = 2.0 ** (8 - s)
        return tf.floor(image / step) * step
    if name == "solarize":
        return tf.where(image >= s, 255.0 - image, image)
    if name == "auto_contrast":
        return _auto_contrast(image)
    if name == "equalize":
        return _equalize(image)
    raise ValueError(f"`name` must be one of {OPERATIONS}, got {name!r}.")


def apply_operation(name, image, magnitude, sign=1.0):
    """Operation `name` at `magnitude` (0–30) on one image, in one direction.

    Args:
        name: one of `OPERATIONS`.
        image: uint8 or float array `(height, width, 3)`, values 0–255.
        magnitude: torchvision's strength scale, see `operation_strengths`.
        sign: +1 or -1, the direction of a signed operation (`SIGNED`).

    Returns:
        A float32 tensor `(height, width, 3)` of whole values 0–255, rounded
        down as torchvision and PIL store their results in 8 bits.
    """
    strength = operation_strengths(magnitude, image.shape[1])[name]
    image = tf.cast(image, tf.float32)
    return tf.floor(_operation(name, image, strength, sign))


def rand_augment(image, magnitude, num_ops=2):
    """torchvision's `RandAugment(num_ops, magnitude)` on one image.

    `num_ops` times in a row: an operation drawn uniformly from the 14 of
    `OPERATIONS` (the same one may be drawn twice), in a random direction.
    Graph-compatible, for `tf.data.Dataset.map` on single images.

    Args:
        image: uint8 tensor `(height, width, 3)`.
        magnitude: 0 to 30 (locuslab: 12).
        num_ops: operations per image.

    Returns:
        The augmented uint8 image, same shape.
    """
    check_int("num_ops", num_ops, 0)
    strengths = operation_strengths(magnitude, image.shape[1])
    x = tf.cast(image, tf.float32)
    for _ in range(num_ops):
        index = tf.random.uniform([], 0, len(OPERATIONS), dtype=tf.int32)
        sign = tf.where(tf.random.uniform([]) < 0.5, -1.0, 1.0)
        branches = [
            (lambda name=name: tf.floor(_operation(name, x, strengths[name], sign)))
            for name in OPERATIONS
        ]
        x = tf.switch_case(index, branches)
        x = tf.ensure_shape(x, image.shape)
    return tf.cast(x, tf.uint8)


def image_changes(originals, augmented):
    """How much `augmented` differs from `originals`, in three numbers.

    Args:
        originals, augmented: arrays `(n, height, width, 3)` of values 0–255,
            image i of `augmented` made from image i of `originals`.

    Returns:
        A dict of means over the images: `change` (mean absolute change of a
        pixel value, of 255), `correlation` (Pearson correlation of an
        augmented image's pixel values with its original's; 0 where either
        is constant) and `values` (distinct pixel values per augmented image;
        a 32×32×3 CIFAR-10 image has a few hundred).
    """
    change, correlation, values = [], [], []
    for original, image in zip(np.asarray(originals, np.float32),
                               np.asarray(augmented, np.float32)):
        original, image = original.ravel(), image.ravel()
        change.append(np.abs(image - original).mean())
        spread = original.std() * image.std()
        correlation.append(np.mean((image - image.mean()) * (original - original.mean()))
                           / spread if spread > 0 else 0.0)
        values.append(len(np.unique(image)))
    return {"change": float(np.mean(change)), "correlation": float(np.mean(correlation)),
            "values": float(np.mean(values))}


def operation_effects(images, magnitude):
    """`image_changes` of each operation at `magnitude` (0 to 30) on uint8
    `images` `(n, height, width, 3)`, a signed operation applied in both
    directions: a dict over `OPERATIONS`."""
    effects = {}
    for name in OPERATIONS:
        signs = (1.0, -1.0) if name in SIGNED else (1.0,)
        augmented = [apply_operation(name, image, magnitude, sign).numpy()
                     for sign in signs for image in images]
        effects[name] = image_changes(np.concatenate([images] * len(signs)), augmented)
    return effects


def best_correlations(originals, augmented, shift=4):
    """How much of each original picture an augmented image still shows.

    Flips and shifts only move pixels, so each augmented image is compared
    with its original in both orientations and at every shift of up to
    `shift` pixels, and the best Pearson correlation of their overlapping
    pixel values is kept: near 1 for an image that was only moved, below 0
    for a negative.

    Args:
        originals, augmented: uint8 arrays `(n, height, width, 3)`, image i
            of `augmented` made from image i of `originals`.
        shift: the largest shift tried, in pixels, in each direction.

    Returns:
        A float array `(n,)` of correlations from -1 to 1.
    """
    best = np.full(len(originals), -1.0)
    height, width = originals.shape[1:3]
    for i, (original, image) in enumerate(zip(originals.astype(np.float32),
                                              augmented.astype(np.float32))):
        for candidate in (original, original[:, ::-1]):
            for dy in range(-shift, shift + 1):
                for dx in range(-shift, shift + 1):
                    a = candidate[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)]
                    b = image[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
                    if a.std() > 0 and b.std() > 0:
                        best[i] = max(best[i], np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return best
