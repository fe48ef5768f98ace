"""A Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words",
2021) for small images, in Keras 3: a linear embedding of each patch plus a
learned position embedding, then pre-norm Transformer blocks (multi-head
self-attention, then an MLP, each added to its input).

The image's class comes from the average of the final tokens (as in Beyer et
al., "Better plain ViT baselines", 2022) rather than a class token. Sized
for CIFAR like Hassani et al.'s ViT-Lite (2021): an MLP twice as wide as the
tokens, no dropout.
"""

import keras
from keras import layers

from .checks import check_patch_size, check_positive_int


@keras.saving.register_keras_serializable(package="convmixer_lib")
class PositionEmbedding(layers.Layer):
    """Add a learned vector to each token: `(batch, tokens, dim)` in and out."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=tuple(input_shape[1:]), name="embedding",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, tokens):
        return tokens + self.embedding


def build_vit(dim=128, depth=4, heads=4, mlp_dim=256, *, patch_size=2, image_size=32,
              num_classes=10):
    """Build a ViT with `depth` blocks of `dim`-wide tokens, one per patch.

    Args:
        dim: width of every token.
        depth: Transformer blocks.
        heads: attention heads per block; each attends with `dim // heads`
            dimensions (`dim` must be a multiple of `heads`).
        mlp_dim: hidden width of each block's MLP (GELU).
        patch_size: side, in pixels, of the square patches (must divide
            `image_size`); 2 gives ConvMixer-256/8's 256 patches.
        image_size, num_classes: as for `build_convmixer`.

    Returns:
        A `keras.Model` mapping images of shape `(batch, image_size,
        image_size, 3)` with values in [0, 255] to class probabilities of
        shape `(batch, num_classes)`; tokens inside have shape
        `(batch, (image_size // patch_size)**2, dim)`.

    Raises:
        ValueError: if a size is not a positive integer, `patch_size` does
            not divide `image_size` or `heads` does not divide `dim`.
    """
    for name, value in [("dim", dim), ("depth", depth), ("heads", heads), ("mlp_dim", mlp_dim),
                        ("patch_size", patch_size), ("image_size", image_size),
                        ("num_classes", num_classes)]:
        check_positive_int(name, value)
    check_patch_size(patch_size, image_size)
    if dim % heads:
        raise ValueError(f"`heads` must divide `dim`={dim}; got heads={heads}.")
    tokens = (image_size // patch_size) ** 2
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    x = layers.Conv2D(dim, patch_size, strides=patch_size, name="patch_embedding")(x)
    x = PositionEmbedding(name="position_embedding")(layers.Reshape((tokens, dim))(x))

    for block in range(1, depth + 1):
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm1")(x)
        y = layers.MultiHeadAttention(heads, dim // heads, name=f"block{block}_attention")(y, y)
        x = layers.Add(name=f"block{block}_add1")([x, y])
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm2")(x)
        y = layers.Dense(mlp_dim, activation="gelu", name=f"block{block}_mlp1")(y)
        y = layers.Dense(dim, name=f"block{block}_mlp2")(y)
        x = layers.Add(name=f"block{block}_add2")([x, y])

    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name=f"vit_{dim}_{depth}")
    model.build_config = {"architecture": "vit", "dim": dim, "depth": depth, "heads": heads,
                          "mlp_dim": mlp_dim, "patch_size": patch_size,
                          "image_size": image_size, "num_classes": num_classes}
    return model
