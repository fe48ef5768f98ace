"""MLP-Mixer (Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for
Vision", 2021) for small images, in Keras 3: a linear embedding of each patch,
then blocks of a token-mixing MLP (across patches, the same for every
channel) and a channel-mixing MLP (across channels, the same for every
patch), each after a LayerNorm and added to its input.

Its hidden widths follow the paper's ratios: half the token width across
patches, four times it across channels.
"""

import keras
from keras import layers

from .checks import check_patch_size, check_positive_int


def build_mlp_mixer(dim=128, depth=4, token_mlp_dim=64, channel_mlp_dim=512, *,
                    patch_size=2, image_size=32, num_classes=10):
    """Build an MLP-Mixer with `depth` blocks of `dim`-wide tokens, one per patch.

    Args:
        dim: width of every token (channels).
        depth: Mixer blocks.
        token_mlp_dim: hidden width of the MLP that mixes the patches.
        channel_mlp_dim: hidden width of the MLP that mixes the channels.
        patch_size, image_size, num_classes: as for `build_vit`.

    Returns:
        A `keras.Model` mapping images of shape `(batch, image_size,
        image_size, 3)` with values in [0, 255] to class probabilities of
        shape `(batch, num_classes)`; tokens inside have shape
        `(batch, (image_size // patch_size)**2, dim)`.

    Raises:
        ValueError: if a size is not a positive integer or `patch_size` does
            not divide `image_size`.
    """
    for name, value in [("dim", dim), ("depth", depth), ("token_mlp_dim", token_mlp_dim),
                        ("channel_mlp_dim", channel_mlp_dim), ("patch_size", patch_size),
                        ("image_size", image_size), ("num_classes", num_classes)]:
        check_positive_int(name, value)
    check_patch_size(patch_size, image_size)
    tokens = (image_size // patch_size) ** 2
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inputs)
    x = layers.Conv2D(dim, patch_size, strides=patch_size, name="patch_embedding")(x)
    x = layers.Reshape((tokens, dim))(x)

    for block in range(1, depth + 1):
        # Mix patches: the MLP runs along the token axis, once per channel.
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm1")(x)
        y = layers.Permute((2, 1))(y)
        y = layers.Dense(token_mlp_dim, activation="gelu", name=f"block{block}_token_mlp1")(y)
        y = layers.Dense(tokens, name=f"block{block}_token_mlp2")(y)
        x = layers.Add(name=f"block{block}_add1")([x, layers.Permute((2, 1))(y)])
        # Mix channels: the MLP runs along the channel axis, once per patch.
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_norm2")(x)
        y = layers.Dense(channel_mlp_dim, activation="gelu",
                         name=f"block{block}_channel_mlp1")(y)
        y = layers.Dense(dim, name=f"block{block}_channel_mlp2")(y)
        x = layers.Add(name=f"block{block}_add2")([x, y])

    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name=f"mlp_mixer_{dim}_{depth}")
    model.build_config = {"architecture": "mlp_mixer", "dim": dim, "depth": depth,
                          "token_mlp_dim": token_mlp_dim, "channel_mlp_dim": channel_mlp_dim,
                          "patch_size": patch_size, "image_size": image_size,
                          "num_classes": num_classes}
    return model
