"""GELU and BatchNorm fused into one layer: the same model, fewer passes over memory.

ConvMixer follows each of its 17 convolutions with GELU, then BatchNorm. As
separate Keras layers these elementwise steps read and write the activations a
dozen times per training step, and on a CPU they take about three quarters of
the step. `GeluBatchNorm` computes the same function with a small C++
TensorFlow op (`gelu_batchnorm.cc`, beside this file): two passes forward, two
backward. The op is compiled with the system's C++ compiler on first use and
cached; where that is impossible the layer computes the same thing with plain
TensorFlow operations (slower, same numbers).

Its weights are BatchNormalization's (`gamma`, `beta`, `moving_mean`,
`moving_variance`, in that order), so a model built with `fused=False` and
one built with `fused=True` load each other's weight files.
"""

import hashlib
import os
import subprocess
import tempfile
import warnings

import keras
import tensorflow as tf

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gelu_batchnorm.cc")
_op_library = None
_op_error = None


def _compile_op():
    """Compile `gelu_batchnorm.cc` against the installed TensorFlow; return the .so path."""
    flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    compiler = os.environ.get("CXX", "g++")
    command = [compiler, "-shared", "-fPIC", "-O3", "-march=native", "-w", _SOURCE, *flags]
    with open(_SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join(command).encode()).hexdigest()[:16]
    cache = os.environ.get(
        "CONVMIXER_OP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "convmixer_lib")
    )
    library = os.path.join(cache, f"gelu_batchnorm-{key}.so")
    if not os.path.exists(library):
        os.makedirs(cache, exist_ok=True)
        fd, partial = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        try:
            subprocess.run([*command, "-o", partial], check=True, capture_output=True, text=True)
            os.replace(partial, library)  # atomic: concurrent builds never see half a file
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return library


def op_library():
    """The compiled op library, or None (with the reason in `op_error()`)."""
    global _op_library, _op_error
    if _op_library is None and _op_error is None:
        try:
            _op_library = tf.load_op_library(_compile_op())
        except (OSError, subprocess.CalledProcessError, tf.errors.NotFoundError) as error:
            details = getattr(error, "stderr", "") or ""
            _op_error = f"{error} {details[-2000:]}".strip()
            warnings.warn(
                "convmixer_lib: the fused GELU+BatchNorm op could not be compiled, so "
                f"GeluBatchNorm falls back to plain TensorFlow (same results, slower): {_op_error}",
                stacklevel=2,
            )
        else:
            tf.RegisterGradient("GeluBatchNorm")(_gelu_batchnorm_grad)
    return _op_library


def op_error():
    """Why the op is unavailable, or None."""
    return _op_error


def _gelu_batchnorm_grad(op, dy, _batch_mean_grad, _batch_variance_grad):
    dz, dgamma, dbeta = _op_library.gelu_batch_norm_grad(
        dy, op.inputs[0], op.inputs[1], op.outputs[1], op.outputs[2],
        epsilon=op.get_attr("epsilon"), is_training=op.get_attr("is_training"),
    )
    return [dz, dgamma, dbeta, None, None]


@keras.saving.register_keras_serializable(package="convmixer_lib")
class GeluBatchNorm(keras.layers.Layer):
    """`BatchNormalization()(Activation("gelu")(x))` as one layer, channels last.

    Same defaults as `keras.layers.BatchNormalization`: momentum 0.99,
    epsilon 1e-3; in training it normalizes with the batch's mean and biased
    variance over all axes but the last and updates the moving averages, in
    inference (or when not trainable) it uses the moving averages. GELU is the
    exact (erf) form, as Keras' `"gelu"` activation.

    Input: float32 tensor `(..., channels)`. Output: same shape.
    """

    def __init__(self, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"GeluBatchNorm `{self.name}` needs a known channel (last) axis, "
                f"got input shape {input_shape}."
            )
        self.gamma = self.add_weight((channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight((channels,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(
            (channels,), initializer="zeros", name="moving_mean", trainable=False
        )
        self.moving_variance = self.add_weight(
            (channels,), initializer="ones", name="moving_variance", trainable=False
        )

    def call(self, inputs, training=None):
        training = bool(training) and self.trainable
        library = op_library()
        if library is not None and inputs.dtype == tf.float32:
            outputs, mean, variance = library.gelu_batch_norm(
                inputs, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                epsilon=self.epsilon, is_training=training,
            )
        else:
            outputs, mean, variance = self._call_plain(inputs, training)
        if training:
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
        return outputs

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
