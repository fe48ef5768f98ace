"""A CIFAR ResNet (He et al., "Deep Residual Learning for Image Recognition", 2016,
section 4.2) in Keras 3: 3×3 convolutions in three stages that halve the
resolution and double the width, two convolutions per residual block.

He et al.'s CIFAR networks have 6n + 2 layers; n = 7 (ResNet-44) has about
as many parameters as ConvMixer-256/8. A block that changes the resolution
or width projects its shortcut with a strided 1×1 convolution (their option
B) where theirs pads it with zeros (option A).
"""

import keras
from keras import layers

from .checks import check_positive_int


def _conv_bn(x, width, kernel_size, strides, name, synchronized):
    x = layers.Conv2D(width, kernel_size, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    return layers.BatchNormalization(synchronized=synchronized, name=f"{name}_bn")(x)


def build_resnet(blocks_per_stage=7, widths=(16, 32, 64), *, image_size=32, num_classes=10,
                 synchronized_batchnorm=False):
    """Build ResNet-(6 × `blocks_per_stage` + 2) for small images.

    Args:
        blocks_per_stage: residual blocks `n` in each stage (7: ResNet-44).
        widths: channels of each stage; every stage after the first halves
            the resolution in its first block.
        image_size: side, in pixels, of the square RGB input images.
        num_classes: number of output classes.
        synchronized_batchnorm: as for `build_convmixer`; not recorded.

    Returns:
        A `keras.Model` mapping images of shape `(batch, image_size,
        image_size, 3)` with values in [0, 255] to class probabilities of
        shape `(batch, num_classes)`. Stage `s` (1-based) works at
        `image_size / 2**(s - 1)` pixels.

    Raises:
        ValueError: if a size is not a positive integer.
    """
    for name, value in [("blocks_per_stage", blocks_per_stage), ("image_size", image_size),
                        ("num_classes", num_classes), *(("widths", w) for w in widths)]:
        check_positive_int(name, value)
    sync = synchronized_batchnorm
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    x = layers.ReLU(name="stem_relu")(_conv_bn(x, widths[0], 3, 1, "stem", sync))

    for stage, width in enumerate(widths, start=1):
        for block in range(1, blocks_per_stage + 1):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            x = layers.ReLU(name=f"{name}_relu1")(
                _conv_bn(x, width, 3, strides, f"{name}_1", sync))
            x = _conv_bn(x, width, 3, 1, f"{name}_2", sync)
            if strides != 1 or shortcut.shape[-1] != width:
                shortcut = _conv_bn(shortcut, width, 1, strides, f"{name}_shortcut", sync)
            x = layers.ReLU(name=f"{name}_relu2")(layers.Add(name=f"{name}_add")([x, shortcut]))

    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name=f"resnet_{6 * blocks_per_stage + 2}")
    model.build_config = {"architecture": "resnet", "blocks_per_stage": blocks_per_stage,
                          "widths": list(widths), "image_size": image_size,
                          "num_classes": num_classes}
    return model
