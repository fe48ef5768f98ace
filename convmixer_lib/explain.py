"""What a trained ConvMixer looks at, and how to use it on pictures of your own.

`grad_cam` and `occlusion_sensitivity` map which parts of an image a class
score depends on; `predict_images` classifies image files of any size (read by
`images.load_image`); `predict_with_flips` averages a prediction over each image and its mirror
image; `export_model` writes a trained model as a `.keras` file and a
TensorFlow SavedModel.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from .checks import check_int, check_list, check_number, check_positive_int
from .choices import CLASS_NAMES
from .data import check_images
from .images import load_image


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
        layer_name: a layer whose output is a feature map `(n, gh, gw, c)` that
            alone feeds the rest of the model (in ConvMixer, a block's last
            layer `block{i}_pointwise_bn`, or its `block{i}_residual`).
        class_index: the class to explain: an int, one int per image, or None
            for each image's predicted class.

    Returns:
        float32 array `(n, gh, gw)`, each map scaled to a maximum of 1 (all
        zeros where nothing raises the score).
    """
    check_images(images, image_size=model.input_shape[1])
    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise ValueError(f"grad_cam needs a model that ends in a Dense layer, got {head.name!r}.")
    cut = model.get_layer(layer_name).output
    try:  # the rest of the model, from the layer's feature map to the head's input
        rest = keras.Model(cut, head.input)
    except ValueError:
        raise ValueError(
            f"grad_cam needs a layer whose output alone feeds the rest of the model, such "
            f"as a block's last layer; {layer_name!r} is bypassed by an earlier layer's "
            "output (a residual connection).") from None
    features = keras.Model(model.inputs, cut).predict(np.asarray(images), verbose=0)

    def logits(features):  # the class scores before softmax
        return keras.ops.matmul(rest(features, training=False), head.kernel) + head.bias

    classes = _classes(class_index, keras.ops.convert_to_numpy(logits(features)))
    chosen = keras.ops.one_hot(classes, head.units)
    gradients = _gradient(lambda x: keras.ops.sum(logits(x) * chosen), features)
    weights = gradients.mean(axis=(1, 2), keepdims=True)
    maps = np.maximum((weights * features).sum(axis=-1), 0)
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
        patch_size, stride: side and step of the square, in pixels (the
            side at most the image's).
        fill: the grey value (0–255) the square is filled with.

    Returns:
        float32 array `(n, rows, columns)` of probability drops (negative where
        hiding the square raises the probability), one entry per position of
        the square, `rows = (h - patch_size) // stride + 1` and likewise for
        columns.
    """
    check_images(images, image_size=model.input_shape[1])
    images = np.asarray(images)
    n, height, width, _ = images.shape
    check_int("patch_size", patch_size, 1, min(height, width) + 1)
    check_positive_int("stride", stride)
    check_number("fill", fill, 0, 255)
    probabilities = model.predict(images, verbose=0)
    classes = _classes(class_index, probabilities)
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
        return np.argmax(scores, axis=1).astype(np.int32)
    given = np.asarray(class_index)
    if given.dtype.kind not in "iu":
        raise ValueError(f"`class_index` must be an integer class index (or one per image), "
                         f"got {class_index!r}.")
    classes = np.broadcast_to(given.astype(np.int32), (n,))
    if classes.min() < 0 or classes.max() >= count:
        raise ValueError(
            f"`class_index` must be between 0 and {count - 1}, got {class_index!r}."
        )
    return classes.copy()


def _gradient(function, x):
    """The gradient of the scalar `function(x)` with respect to the float32
    array `x`, by the backend's automatic differentiation, as a NumPy array."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return np.asarray(jax.grad(function)(x))
    if backend == "torch":
        import torch
        x = torch.tensor(x, requires_grad=True)
        function(x).backward()
        return x.grad.numpy()
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
    return tape.gradient(y, x).numpy()


def predict_with_flips(model, images, batch_size=128, plain=None):
    """Class probabilities averaged over each image and its mirror image
    (horizontal-flip test-time augmentation): float32 `(n, classes)`.

    `plain`, if given, holds the model's probabilities for `images` already
    computed, `(n, classes)`; only the mirror images are then predicted.
    """
    check_images(images, image_size=model.input_shape[1])
    check_positive_int("batch_size", batch_size)
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
    if len(class_names) != model.output_shape[-1]:
        raise ValueError(f"`class_names` must name the model's {model.output_shape[-1]} classes, "
                         f"got {len(class_names)} names.")
    check_int("top", top, 1, len(class_names) + 1)
    paths = check_list("paths", paths)
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

    `model.keras` loads with `keras.saving.load_model` (Keras 3) on any
    backend; `saved_model/` with `tf.saved_model.load` (its `serve` function)
    or TensorFlow Serving, without Keras. The SavedModel is written on the
    TensorFlow and JAX backends; on PyTorch only `model.keras` is (Keras
    3.15.1's SavedModel export through `torch.export` fails there with a
    mismatch of input structure). Export the model as `load_run_model`
    returns it, not accelerated (`fast.accelerate`), so that neither file
    needs the library's compiled ops.

    Returns:
        `(keras_path, saved_model_path)`; `saved_model_path` is None on PyTorch.
    """
    os.makedirs(directory, exist_ok=True)
    keras_path = os.path.join(directory, "model.keras")
    model.save(keras_path)
    if keras.backend.backend() == "torch":
        return keras_path, None
    saved_model_path = os.path.join(directory, "saved_model")
    logger = tf.get_logger()  # TensorFlow logs every asset it writes at INFO level
    level = logger.level
    logger.setLevel("ERROR")
    try:
        model.export(saved_model_path, verbose=False)
    finally:
        logger.setLevel(level)
    return keras_path, saved_model_path
