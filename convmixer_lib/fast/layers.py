"""The library's fast CPU layers: the same functions as Keras' layers, fewer passes
over memory.

ConvMixer follows each of its 17 convolutions with GELU, then BatchNorm. As
separate Keras layers these elementwise steps read and write the activations a
dozen times per training step. `GeluBatchNorm` computes the same function with
one C++ TensorFlow op (`gelu_batchnorm.cc`): two passes forward, two backward.
`DepthwiseConv` is Keras' `DepthwiseConv2D` whose filter gradient, the slowest
part of TensorFlow's depthwise convolution on a CPU, comes from a C++ op
(`depthwise_conv_grad.cc`). Both ops are built on first use (see `ops.py`);
where that is impossible the layers compute the same things with plain
TensorFlow operations (slower, same numbers).

Their weights are those of the Keras layers they replace (`gamma`, `beta`,
`moving_mean`, `moving_variance` of BatchNormalization; `kernel`, `bias` of
DepthwiseConv2D), in the same order, so a model and its `accelerate`d copy
exchange weights with `get_weights`/`set_weights`; the library always writes
weight files in the plain layers' layout.
"""

import keras
import tensorflow as tf

from .ops import gpu_visible, op_library


@keras.saving.register_keras_serializable(package="convmixer_lib")
class GeluBatchNorm(keras.layers.Layer):
    """`BatchNormalization()(Activation("gelu")(x))` as one layer, channels last.

    Same defaults as `keras.layers.BatchNormalization`: momentum 0.99,
    epsilon 1e-3; in training it normalizes with the batch's mean and biased
    variance over all axes but the last and updates the moving averages, in
    inference (or when not trainable) it uses the moving averages. GELU is the
    exact (erf) form, as Keras' `"gelu"` activation.

    Input: tensor `(..., channels)`, computed in float32 (as Keras' BatchNorm
    does under mixed precision). Output: same shape, in the layer's compute dtype.
    """

    def __init__(self, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon
        # The C++ op has no XLA kernel; where a GPU is visible the layer uses
        # plain TensorFlow operations, which XLA compiles.
        self.supports_jit = gpu_visible()

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"GeluBatchNorm `{self.name}` needs a known channel (last) axis, "
                f"got input shape {input_shape}."
            )
        self.gamma = self.add_weight(
            (channels,), initializer="ones", name="gamma", autocast=False
        )
        self.beta = self.add_weight(
            (channels,), initializer="zeros", name="beta", autocast=False
        )
        self.moving_mean = self.add_weight(
            (channels,), initializer="zeros", name="moving_mean",
            trainable=False, autocast=False,
        )
        self.moving_variance = self.add_weight(
            (channels,), initializer="ones", name="moving_variance",
            trainable=False, autocast=False,
        )

    def call(self, inputs, training=None, mask=None):  # `mask`: as BatchNorm takes it
        if mask is not None:
            raise ValueError(f"GeluBatchNorm `{self.name}` does not support masks.")
        training = bool(training) and self.trainable
        z = tf.cast(inputs, tf.float32)
        library = op_library()
        if library is not None:
            outputs, mean, variance = library.gelu_batch_norm(
                z, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                epsilon=self.epsilon, is_training=training,
            )
        else:
            outputs, mean, variance = self._call_plain(z, training)
        if training:
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)

    def _call_plain(self, inputs, training):
        """The same computation with plain TensorFlow operations."""
        g = keras.activations.gelu(inputs, approximate=False)
        if training:
            axes = list(range(len(inputs.shape) - 1))
            mean, variance = tf.nn.moments(g, axes)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        outputs = tf.nn.batch_normalization(
            g, mean, variance, self.beta, self.gamma, self.epsilon
        )
        return outputs, mean, variance

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="convmixer_lib")
class DepthwiseConv(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with a faster filter gradient on a CPU.

    The forward pass and the input gradient are TensorFlow's; the kernel's
    gradient comes from the library's op where it applies (stride 1, no
    dilation, channel multiplier 1, "same" padding, channels last, float32,
    the op available); otherwise the layer is exactly `DepthwiseConv2D`.
    Same arguments, weights and outputs.
    """

    def _op_applies(self):
        return (
            self.strides == (1, 1) and self.dilation_rate == (1, 1)
            and self.depth_multiplier == 1 and self.padding == "same"
            and self.data_format == "channels_last" and self.compute_dtype == "float32"
            and self.kernel_size[0] == self.kernel_size[1]
            and op_library() is not None
        )

    def call(self, inputs):
        if not self._op_applies():
            return super().call(inputs)
        outputs = _depthwise_conv(inputs, tf.convert_to_tensor(self.kernel))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


@tf.custom_gradient
def _depthwise_conv(x, kernel):
    """y = depthwise_conv2d(x, kernel), stride 1, "same"; kernel (k, k, c, 1)."""
    y = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")

    def gradient(dy):
        dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
            input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
            strides=[1, 1, 1, 1], padding="SAME")
        k = kernel.shape[0]
        dw = op_library().conv_mixer_depthwise_conv_filter_grad(
            x, dy, kernel[..., 0], pad=(k - 1) // 2)
        return dx, dw[..., None]

    return y, gradient
