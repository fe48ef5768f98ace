"""What a forward pass costs: floating-point operations per image, counted from
a model's layers.

Counted: every multiply-add of the convolutions, dense layers and attention
(its projections and its two products, queries with keys and weights with
values), as two operations each. Not counted: element-wise work
(activations, normalization, residual additions, softmax, pooling), a few
operations per value where each multiply-add layer does tens to hundreds
(a 5x5 depthwise convolution 25, a 256-channel pointwise one 256).
"""

import math

import keras

from .vit import PositionEmbedding

# Layers that multiply-add nothing: element-wise work, normalization, learned
# offsets, pooling and reshaping. Any other layer must be counted below.
_FREE = (keras.layers.InputLayer, keras.layers.Rescaling, keras.layers.Reshape,
         keras.layers.Permute, keras.layers.Flatten, keras.layers.Add,
         keras.layers.Activation, keras.layers.ReLU, keras.layers.Dropout,
         keras.layers.BatchNormalization, keras.layers.LayerNormalization,
         keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
         PositionEmbedding)


def _positions(layer):
    """Output positions of `layer` per image: every output axis but the batch and channels."""
    return math.prod(layer.output.shape[1:-1])


def _attention(layer):
    """Multiply-adds of self-attention: `layer` called as `layer(x, x)` on (batch, tokens, width)."""
    inputs, config = keras.tree.flatten(layer.input), layer.get_config()
    if (any(tensor is not inputs[0] for tensor in inputs) or len(inputs[0].shape) != 3
            or tuple(config["attention_axes"] or (1,)) != (1,) or config["use_gate"]):
        raise ValueError(f"layer {layer.name!r}: `forward_flops` counts self-attention "
                         "over one axis of tokens, without a gate, only.")
    tokens, width = inputs[0].shape[1], inputs[0].shape[2]
    heads, key_dim, value_dim = layer.num_heads, layer.key_dim, layer.value_dim or layer.key_dim
    projections = tokens * (2 * width * heads * key_dim + width * heads * value_dim
                            + heads * value_dim * layer.output.shape[-1])
    return projections + heads * tokens * tokens * (key_dim + value_dim)


def _multiply_adds(layer):
    if isinstance(layer, keras.Model):
        return sum(_multiply_adds(inner) for inner in layer.layers)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _attention(layer)
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                          keras.layers.Dense)):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"layer {layer.name!r}: `forward_flops` counts channels-last "
                             "layers only.")
        # Each output position multiplies its window by the whole kernel once.
        return _positions(layer) * math.prod(layer.kernel.shape)
    if isinstance(layer, _FREE):
        return 0
    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) is of a kind "
                     "`forward_flops` cannot count.")


def forward_flops(model):
    """Floating-point operations of one image's forward pass through `model`.

    Args:
        model: a Functional Keras model of Keras' layers, each called once
            (any of the library's models before `fast.accelerate`).

    Returns:
        Two operations per multiply-add of its convolutions, dense layers and
        attention, as an int (ConvMixer-256/8: about 0.3 billion).

    Raises:
        ValueError: naming a layer of a kind it cannot count (anything but
            the convolutions, dense layers, self-attention and the layers
            that multiply-add nothing), or a use of one it does not count.
    """
    return 2 * sum(_multiply_adds(layer) for layer in model.layers)
