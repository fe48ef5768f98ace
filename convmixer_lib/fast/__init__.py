"""Faster training on a CPU, as an opt-in transform of a built ConvMixer.

`accelerate(model)` returns the same model, weights included, with two of its
kinds of layers swapped for the library's CPU layers (`layers.py`, whose C++
ops `ops.py` builds on first use): each GELU followed by BatchNorm becomes one
`GeluBatchNorm` layer, and each depthwise convolution a `DepthwiseConv`, whose
filter gradient comes from a C++ op. The model computes the same function;
only its training step is faster. Where the ops cannot help it returns the
model unchanged. The trainer and the command line apply it; the model and
everything that reads weights know nothing of it.
"""

import keras

from .layers import DepthwiseConv, GeluBatchNorm
from .ops import op_error, op_library

__all__ = ["accelerate", "acceleration_unavailable"]


def acceleration_unavailable():
    """Why `accelerate` would return a model unchanged here, or None.

    The ops run with the TensorFlow backend, on one CPU device, where the
    system's C++ compiler could build them (`ops.op_library`).
    """
    if keras.backend.backend() != "tensorflow":
        return f"the fast layers need the TensorFlow backend, not {keras.backend.backend()}"
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        return (f"the fast layers keep one device's BatchNorm statistics; this "
                f"strategy has {replicas} replicas")
    if op_library() is None:
        return op_error()
    return None


def accelerate(model):
    """`model` with the library's fast CPU layers, or `model` itself.

    Every `DepthwiseConv2D` becomes a `DepthwiseConv` with the same
    configuration, and every `BatchNormalization` whose only input is the
    output of an `Activation("gelu")` that feeds nothing else becomes a
    `GeluBatchNorm` (the activation becomes a linear one of the same name, so
    every layer name stays). Other layers are cloned as they are. The weights
    are copied: the two models give the same outputs (within float32
    round-off) and exchange weights with `get_weights`/`set_weights`.

    Args:
        model: a Functional Keras model, e.g. from `build_convmixer`; each of
            its layers called once.

    Returns:
        A new model, or `model` unchanged where `acceleration_unavailable()`
        gives a reason (another backend, several replicas, no compiled ops,
        a visible GPU).
    """
    if acceleration_unavailable():
        return model
    fused = _gelu_batchnorm_pairs(model)

    def clone(layer):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return DepthwiseConv.from_config(layer.get_config())
        if layer.name in fused:
            config = layer.get_config()
            return GeluBatchNorm(momentum=config["momentum"], epsilon=config["epsilon"],
                                 trainable=config["trainable"], dtype=config["dtype"],
                                 name=layer.name)
        if layer.name in fused.values():  # its GELU is now in the GeluBatchNorm
            return keras.layers.Activation("linear", name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    accelerated = keras.models.clone_model(model, clone_function=clone)
    accelerated.set_weights(model.get_weights())
    if hasattr(model, "build_config"):  # what `architectures.model_config` reads
        accelerated.build_config = dict(model.build_config)
    return accelerated


def _gelu_batchnorm_pairs(model):
    """{BatchNorm layer name: name of the GELU activation it alone follows}."""
    def inputs(layer):
        return keras.tree.flatten(layer.input)

    consumers = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for tensor in inputs(layer):
            consumers.setdefault(id(tensor), []).append(layer)
    outputs = {id(tensor) for tensor in keras.tree.flatten(model.outputs)}
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.synchronized:
            continue
        (tensor,) = inputs(layer)
        producer = next((p for p in model.layers if p.output is tensor), None)
        if (isinstance(producer, keras.layers.Activation)
                and producer.get_config()["activation"] == "gelu"
                and consumers[id(tensor)] == [layer] and id(tensor) not in outputs
                and layer.get_config()["axis"] in (-1, len(tensor.shape) - 1)
                and layer.get_config()["center"] and layer.get_config()["scale"]):
            pairs[layer.name] = producer.name
    return pairs
