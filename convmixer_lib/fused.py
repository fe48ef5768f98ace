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
`moving_variance`, in that order), so models built with `fused=False` and
`fused=True` exchange weights with `get_weights`/`set_weights`; the library
always writes weight files in the plain layers' layout.
"""

import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings

import keras
import tensorflow as tf

from .machine import cpu_flags

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gelu_batchnorm.cc")
_lock = threading.Lock()
_op_library = None
_op_error = None


def _compile_op():
    """Compile `gelu_batchnorm.cc` against the installed TensorFlow; return the .so path.

    The library is cached under $CONVMIXER_OP_CACHE (default
    ~/.cache/convmixer_lib), keyed by the source, the command, the compiler's
    and TensorFlow's versions and the CPU's features.
    """
    flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    compiler = os.environ.get("CXX", "g++")
    # TensorFlow's bundled Eigen does not compile its AVX512-FP16 code (Intel
    # Sapphire Rapids and later); the op computes in float32 and needs none of it.
    flags_of_cpu = cpu_flags()
    no_fp16 = ["-mno-avx512fp16"] if "avx512_fp16" in flags_of_cpu else []
    command = [compiler, "-shared", "-fPIC", "-O3", "-march=native", *no_fp16, "-w",
               _SOURCE, *flags]
    compiler_version = subprocess.run(
        [compiler, "--version"], check=True, capture_output=True, text=True
    ).stdout
    key = hashlib.sha256()
    with open(_SOURCE, "rb") as f:
        key.update(f.read())
    for part in (" ".join(command), compiler_version, tf.__version__,
                 tf.version.GIT_VERSION, " ".join(sorted(flags_of_cpu)) or platform.machine()):
        key.update(part.encode())
    cache = os.environ.get(
        "CONVMIXER_OP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "convmixer_lib")
    )
    library = os.path.join(cache, f"gelu_batchnorm-{key.hexdigest()[:16]}.so")
    if not os.path.exists(library):
        os.makedirs(cache, exist_ok=True)
        fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=cache)
        os.close(fd)
        try:
            subprocess.run([*command, "-o", partial], check=True, capture_output=True, text=True)
            os.chmod(partial, 0o755)
            os.replace(partial, library)  # atomic: concurrent builds never see half a file
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return library


@functools.cache
def _gpu_visible():
    return bool(tf.config.list_logical_devices("GPU"))


def op_library():
    """The compiled op library, or None (with the reason in `op_error()`).

    The op has a CPU kernel only: where TensorFlow sees a GPU, the layer uses
    plain TensorFlow operations and this returns None.
    """
    global _op_library, _op_error
    with _lock:
        if _op_library is None and _op_error is None:
            if _gpu_visible():
                _op_error = "a GPU is visible; the fused op is for CPUs"
            else:
                _op_library, _op_error = _load_op()
    return _op_library


def _load_op():
    try:
        library = _compile_op()
        try:
            loaded = tf.load_op_library(library)
        except tf.errors.NotFoundError:  # a damaged cached file: build it again
            os.remove(library)
            loaded = tf.load_op_library(_compile_op())
    except (OSError, subprocess.CalledProcessError, tf.errors.NotFoundError) as error:
        details = getattr(error, "stderr", "") or ""
        reason = f"{error} {details[-2000:]}".strip()
        warnings.warn(
            "convmixer_lib: the fused GELU+BatchNorm op could not be compiled, so "
            f"GeluBatchNorm falls back to plain TensorFlow (same results, slower): {reason}",
            stacklevel=3,
        )
        return None, reason
    tf.RegisterGradient("GeluBatchNorm")(_gelu_batchnorm_grad)
    return loaded, None


def op_error():
    """Why the op is unavailable, or None."""
    return _op_error


def _gelu_batchnorm_grad(op, dy, _batch_mean_grad, _batch_variance_grad):
    # batch_mean and batch_variance only feed the moving averages, which take
    # no gradient. First-order gradients only: the grad op has no gradient.
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

    Input: tensor `(..., channels)`, computed in float32 (as Keras' BatchNorm
    does under mixed precision). Output: same shape, in the layer's compute dtype.
    """

    def __init__(self, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon
        # The C++ op has no XLA kernel; where a GPU is visible the layer uses
        # plain TensorFlow operations, which XLA compiles.
        self.supports_jit = _gpu_visible()

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

    def call(self, inputs, training=None):
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
