"""What a forward pass costs: floating-point operations per image, counted from
a model's layers.

Counted: every multiply-add of the convolutions, dense layers and attention
(its projections and its two products, queries with keys and weights with
values), as two operations each. Not counted: element-wise work
(activations, normalization, residual additions, softmax, pooling), which
costs a few operations per value where a multiply-add layer costs hundreds.
"""

import math

import keras

from .vit import PositionEmbedding

# Layers that hold weights but multiply-add nothing per image: normalization
# and learned offsets, element-wise.
_ELEMENTWISE_WEIGHTED = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                         PositionEmbedding)


def _positions(layer):
    """Output positions of `layer` per image: every output axis but the batch and channels."""
    return math.prod(layer.output.shape[1:-1])


def _multiply_adds(layer):
    if isinstance(layer, keras.Model):
        return sum(_multiply_adds(inner) for inner in layer.layers)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        query, value = keras.tree.flatten(layer.input)[:2] if isinstance(
            layer.input, (list, tuple)) else (layer.input, layer.input)
        queries, keys = query.shape[1], value.shape[1]
        width, out = query.shape[-1], layer.output.shape[-1]
        heads, key_dim = layer.num_heads, layer.key_dim
        value_dim = layer.value_dim or key_dim
        projections = (queries * width * heads * key_dim + keys * width * heads * key_dim
                       + keys * width * heads * value_dim + queries * heads * value_dim * out)
        return projections + heads * queries * keys * (key_dim + value_dim)
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                          keras.layers.Dense)):
        # Each output position multiplies its window by the whole kernel once.
        return _positions(layer) * math.prod(layer.kernel.shape)
    if layer.weights and not isinstance(layer, _ELEMENTWISE_WEIGHTED):
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) holds weights that "
                         "`forward_flops` cannot count.")
    return 0


def forward_flops(model):
    """Floating-point operations of one image's forward pass through `model`.

    Args:
        model: a Functional Keras model of Keras' layers, each called once
            (any of the library's models before `fast.accelerate`).

    Returns:
        Two operations per multiply-add of its convolutions, dense layers and
        attention, as an int (ConvMixer-256/8: about 0.3 billion).

    Raises:
        ValueError: naming a layer with weights of a kind it cannot count.
    """
    return 2 * sum(_multiply_adds(layer) for layer in model.layers)
