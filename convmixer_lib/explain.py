"""What a trained ConvMixer looks at, and how to use it on pictures of your own.

`grad_cam` and `occlusion_sensitivity` map which parts of an image a class
score depends on; `load_image` and `predict_images` classify image files of any
size; `predict_with_flips` averages a prediction over each image and its mirror
image; `export_model` writes a trained model as a `.keras` file and a
TensorFlow SavedModel.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from .data import CLASS_NAMES, check_images


def grad_cam(model, images, layer_name, class_index=None):
    """Grad-CAM (Selvaraju et al., 2017) at the layer `layer_name`.

    Each channel of the layer's feature map is weighted by the mean gradient of
    the class score (the class's logit, before softmax) with respect to it, the
    weighted channels are summed, and negative values are set to 0: the map
    shows where the feature map raises the class's score.

    Args:
        model: a Keras model of uint8 images `(n, h, w, 3)` ending in a Dense
            layer with softmax, e.g. ConvMixer.
        images: uint8 array `(n, h, w, 3)`.
        layer_name: a layer whose output is a feature map `(n, gh, gw, c)`.
        class_index: the class to explain: an int, one int per image, or None
            for each image's predicted class.

    Returns:
        float32 array `(n, gh, gw)`, each map scaled to a maximum of 1 (all
        zeros where nothing raises the score).
    """
    check_images(images)
    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise ValueError(f"grad_cam needs a model that ends in a Dense layer, got {head.name!r}.")
    probe = keras.Model(model.inputs, [model.get_layer(layer_name).output, head.input])
    with tf.GradientTape() as tape:
        features, pooled = probe(tf.convert_to_tensor(images), training=False)
        logits = tf.matmul(pooled, head.kernel) + head.bias  # the score before softmax
        classes = _classes(class_index, logits)
        scores = tf.gather(logits, classes, batch_dims=1)
    gradients = tape.gradient(scores, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    peaks = maps.max(axis=(1, 2), keepdims=True)
    return (maps / np.where(peaks > 0, peaks, 1)).astype(np.float32)


def occlusion_sensitivity(model, images, class_index=None, patch_size=4, stride=2,
                          fill=128):
    """How much the class probability drops when a square of the image is hidden.

    A `patch_size` square of grey (`fill`) slides over each image in steps of
    `stride` pixels; each position records the probability of the class with
    the original image less that with the square in place.

    Args:
        model, images, class_index: as for `grad_cam`.
        patch_size, stride: side and step of the square, in pixels.
        fill: the grey value (0–255) the square is filled with.

    Returns:
        float32 array `(n, rows, columns)` of probability drops (negative where
        hiding the square raises the probability), one entry per position of
        the square, `rows = (h - patch_size) // stride + 1` and likewise for
        columns.
    """
    check_images(images)
    images = np.asarray(images)
    n, height, width, _ = images.shape
    probabilities = model.predict(images, verbose=0)
    classes = _classes(class_index, probabilities).numpy()
    base = probabilities[np.arange(n), classes]
    rows = range(0, height - patch_size + 1, stride)
    columns = range(0, width - patch_size + 1, stride)
    drops = np.zeros((n, len(rows), len(columns)), np.float32)
    for i, top in enumerate(rows):
        occluded = np.repeat(images[:, None], len(columns), axis=1)
        for j, left in enumerate(columns):
            occluded[:, j, top:top + patch_size, left:left + patch_size] = fill
        hidden = model.predict(occluded.reshape(-1, height, width, 3), verbose=0)
        hidden = hidden.reshape(n, len(columns), -1)
        chosen = hidden[np.arange(n)[:, None], np.arange(len(columns)), classes[:, None]]
        drops[:, i] = base[:, None] - chosen
    return drops


def _classes(class_index, scores):
    """One class per image: `class_index` (an int, or one per image) or the one
    with the highest score; `scores` is `(n, classes)`."""
    n, count = scores.shape
    if class_index is None:
        return tf.argmax(scores, axis=1, output_type=tf.int32)
    classes = np.broadcast_to(np.asarray(class_index, np.int32), (n,))
    if classes.min() < 0 or classes.max() >= count:
        raise ValueError(
            f"`class_index` must be between 0 and {count - 1}, got {class_index!r}."
        )
    return tf.constant(classes)


def load_image(path, image_size=32):
    """Read a PNG or JPEG file as the model's input: uint8 `(image_size, image_size, 3)`.

    The picture is resized to `image_size` × `image_size` by averaging the
    pixels each output pixel covers (the aspect ratio is not kept: crop first
    to keep it). Greyscale becomes RGB with three equal channels; an alpha
    channel is dropped after compositing on white.

    Returns:
        `(image, note)`: the array, and a sentence saying what was converted
        (empty when the file was already RGB).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if `path` is not an image file Pillow can read.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {path!r} not found.")
    try:
        with Image.open(path) as picture:
            picture.load()
            mode, size = picture.mode, picture.size
            notes = []
            if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in picture.info):
                rgba = picture.convert("RGBA")
                picture = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                picture.alpha_composite(rgba)
                notes.append(f"its alpha channel ({mode}) was composited on white")
            elif mode != "RGB":
                notes.append(f"its {mode} pixels were converted to RGB")
            picture = picture.convert("RGB")
            if size != (image_size, image_size):
                notes.append(f"it was resized from {size[0]}×{size[1]} to "
                             f"{image_size}×{image_size} pixels")
                picture = picture.resize((image_size, image_size), Image.Resampling.BOX)
            image = np.asarray(picture, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(
            f"{path!r} cannot be read as an image ({type(error).__name__}); "
            "expected a PNG or JPEG file."
        ) from None
    note = f"{os.path.basename(path)}: {'; '.join(notes)}." if notes else ""
    return image, note


def predict_with_flips(model, images, batch_size=128, plain=None):
    """Class probabilities averaged over each image and its mirror image
    (horizontal-flip test-time augmentation): float32 `(n, classes)`.

    `plain`, if given, holds the model's probabilities for `images` already
    computed, `(n, classes)`; only the mirror images are then predicted.
    """
    check_images(images)
    images = np.asarray(images)
    if plain is None:
        plain = model.predict(images, batch_size=batch_size, verbose=0)
    elif np.shape(plain) != (len(images), model.output_shape[-1]):
        raise ValueError(
            f"`plain` must hold {len(images)} rows of {model.output_shape[-1]} class "
            f"probabilities, one per image, got shape {np.shape(plain)}."
        )
    mirrored = model.predict(images[:, :, ::-1], batch_size=batch_size, verbose=0)
    return ((plain + mirrored) / 2).astype(np.float32)


def predict_images(model, paths, top=3, flips=False, class_names=CLASS_NAMES):
    """Classify image files: for each, its `top` classes and their probabilities.

    Returns:
        A list with one dict per file: `path`, `note` (what `load_image`
        converted), `image` (the uint8 array the model saw) and `top` (a list
        of `(class name, probability)`, most probable first).
    """
    loaded = [load_image(path, model.input_shape[1]) for path in paths]
    images = np.stack([image for image, _ in loaded])
    probabilities = (predict_with_flips(model, images) if flips
                     else model.predict(images, verbose=0))
    results = []
    for path, (image, note), p in zip(paths, loaded, probabilities):
        best = np.argsort(-p, kind="stable")[:top]
        results.append({"path": os.fspath(path), "note": note, "image": image,
                        "top": [(class_names[i], float(p[i])) for i in best]})
    return results


def export_model(model, directory):
    """Write `model` to `directory` as `model.keras` and as a SavedModel.

    `model.keras` loads with `keras.saving.load_model` (Keras 3);
    `saved_model/` with `tf.saved_model.load` (its `serve` function) or
    TensorFlow Serving, without Keras. Build `model` with the plain layers
    (`fused=False`, as `load_run_model` does by default) so that neither file
    needs the library's compiled ops.

    Returns:
        `(keras_path, saved_model_path)`.
    """
    os.makedirs(directory, exist_ok=True)
    keras_path = os.path.join(directory, "model.keras")
    saved_model_path = os.path.join(directory, "saved_model")
    model.save(keras_path)
    logger = tf.get_logger()  # TensorFlow logs every asset it writes at INFO level
    level = logger.level
    logger.setLevel("ERROR")
    try:
        model.export(saved_model_path, verbose=False)
    finally:
        logger.setLevel(level)
    return keras_path, saved_model_path
