"""ConvMixer (Trockman & Kolter, "Patches Are All You Need?") in Keras 3.

The whole architecture is `build_convmixer`: a patch-embedding stem, `depth`
identical ConvMixer blocks at one resolution, and a linear classifier.
"""

import keras
from keras import layers

from .checks import check_patch_size, check_positive_int

STEM_CONV = "stem_conv"
CLASSIFIER = "classifier"


def depthwise_conv_name(block):
    """Name of the depthwise (spatial-mixing) convolution of block `block` (1-based)."""
    return f"block{block}_depthwise_conv"


def pointwise_conv_name(block):
    """Name of the pointwise (channel-mixing) convolution of block `block` (1-based)."""
    return f"block{block}_pointwise_conv"


ACTIVATIONS = ("gelu", "relu")


def _activation_block(x, name, activation, batchnorm_first, synchronized):
    """The activation, then BatchNorm (or BatchNorm first): after every convolution."""
    activate = layers.Activation(activation, name=f"{name}_{activation}")
    normalize = layers.BatchNormalization(synchronized=synchronized, name=f"{name}_bn")
    return activate(normalize(x)) if batchnorm_first else normalize(activate(x))


def build_convmixer(
    filters=256, depth=8, *, kernel_size=5, patch_size=2, image_size=32, num_classes=10,
    activation="gelu", residual=True, batchnorm_first=False, synchronized_batchnorm=False,
):
    """Build ConvMixer-`filters`/`depth` as a Functional Keras model.

    Args:
        filters: channels `h` of every feature map (256 in ConvMixer-256/8).
        depth: number of ConvMixer blocks (8 in ConvMixer-256/8).
        kernel_size: side, in pixels of the patch grid, of the depthwise kernels.
        patch_size: side, in pixels, of the square patches; must divide `image_size`.
        image_size: side, in pixels, of the square RGB input images.
        num_classes: number of output classes.
        activation: "gelu" as in the paper, or "relu".
        residual: add each block's input to its depthwise convolution's output,
            as in the paper; False leaves the connection out.
        batchnorm_first: BatchNorm before the activation instead of after it.
        synchronized_batchnorm: BatchNorm with the statistics of the whole
            global batch when training on several devices (see
            `training.distribution`), so that N devices compute what one
            would; not part of the architecture, and not recorded.

    Returns:
        A `keras.Model` mapping images of shape `(batch, image_size, image_size, 3)`
        with values in [0, 255] (any real dtype, e.g. uint8) to class probabilities
        of shape `(batch, num_classes)` that sum to 1. Feature maps inside have shape
        `(batch, image_size // patch_size, image_size // patch_size, filters)`.
        Layers are named: `stem_conv`, `block{i}_depthwise_conv`,
        `block{i}_pointwise_conv` (i = 1 … depth), `classifier`.

    Raises:
        ValueError: if a size is not a positive integer, `patch_size` does not
            divide `image_size` or `activation` is not one of `ACTIVATIONS`.
    """
    for name, value in [
        ("filters", filters),
        ("depth", depth),
        ("kernel_size", kernel_size),
        ("patch_size", patch_size),
        ("image_size", image_size),
        ("num_classes", num_classes),
    ]:
        check_positive_int(name, value)
    check_patch_size(patch_size, image_size)

    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {activation!r}.")
    block_end = dict(activation=activation, batchnorm_first=batchnorm_first,
                     synchronized=synchronized_batchnorm)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)

    # Patch embedding: one linear projection per non-overlapping patch.
    x = layers.Conv2D(filters, patch_size, strides=patch_size, name=STEM_CONV)(x)
    x = _activation_block(x, "stem", **block_end)

    for block in range(1, depth + 1):
        # Mix space: one large kernel per channel, with a residual connection.
        block_input = x
        x = layers.DepthwiseConv2D(kernel_size, padding="same",
                                   name=depthwise_conv_name(block))(x)
        x = _activation_block(x, f"block{block}_depthwise", **block_end)
        if residual:
            x = layers.Add(name=f"block{block}_residual")([x, block_input])
        # Mix channels: a 1x1 convolution at every position.
        x = layers.Conv2D(filters, 1, name=pointwise_conv_name(block))(x)
        x = _activation_block(x, f"block{block}_pointwise", **block_end)

    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=CLASSIFIER)(x)
    model = keras.Model(inputs, outputs, name=f"convmixer_{filters}_{depth}")
    # What config.json holds (`architectures.model_config`): the sizes, and
    # each variant where it differs from the paper's ConvMixer.
    model.build_config = {
        "filters": filters, "depth": depth, "kernel_size": kernel_size,
        "patch_size": patch_size, "image_size": image_size, "num_classes": num_classes,
        **({"activation": activation} if activation != "gelu" else {}),
        **({"residual": False} if not residual else {}),
        **({"batchnorm_first": True} if batchnorm_first else {}),
    }
    return model


def convmixer_config(model):
    """The `build_convmixer` arguments that built `model`, as a dict (what a run
    directory's config.json holds; the variant arguments `activation`,
    `residual` and `batchnorm_first` only where they differ from the paper's
    ConvMixer).

    Raises:
        ValueError: if `model` was not built by `build_convmixer` (or copied
            from such a model by `fast.accelerate`).
    """
    arguments = getattr(model, "build_config", None)
    if arguments is None or "architecture" in arguments:
        raise ValueError(f"model {model.name!r} was not built by `build_convmixer`, so "
                         "its configuration is unknown.")
    return dict(arguments)
