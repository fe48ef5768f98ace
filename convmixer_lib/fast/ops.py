"""The library's C++ TensorFlow ops: built on first use, cached, loaded once.

Two sources beside this file make one library: `gelu_batchnorm.cc` (GELU and
BatchNorm in one op, and its gradient) and `depthwise_conv_grad.cc` (the
filter gradient of a depthwise convolution). They are compiled with the
system's C++ compiler against the installed TensorFlow the first time a layer
of `layers.py` needs them (about 20 s), and cached. Where that is impossible,
or where TensorFlow sees a GPU (the ops have CPU kernels only), `op_library()`
returns None and the layers compute the same functions with plain TensorFlow.
"""

import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings

import tensorflow as tf

from ..machine import cpu_flags

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = [os.path.join(_HERE, name) for name in ("gelu_batchnorm.cc", "depthwise_conv_grad.cc")]
_lock = threading.Lock()
_op_library = None
_op_error = None


def _compile():
    """Compile the sources against the installed TensorFlow; return the .so path.

    The library is cached under $CONVMIXER_OP_CACHE (default
    ~/.cache/convmixer_lib), keyed by the sources, the command, the compiler's
    and TensorFlow's versions and the CPU's features.
    """
    flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    compiler = os.environ.get("CXX", "g++")
    # TensorFlow's bundled Eigen does not compile its AVX512-FP16 code (Intel
    # Sapphire Rapids and later); the ops compute in float32 and need none of it.
    flags_of_cpu = cpu_flags()
    no_fp16 = ["-mno-avx512fp16"] if "avx512_fp16" in flags_of_cpu else []
    command = [compiler, "-shared", "-fPIC", "-O3", "-march=native", *no_fp16, "-w",
               *_SOURCES, *flags]
    compiler_version = subprocess.run(
        [compiler, "--version"], check=True, capture_output=True, text=True
    ).stdout
    key = hashlib.sha256()
    for source in _SOURCES:
        with open(source, "rb") as f:
            key.update(f.read())
    for part in (" ".join(command), compiler_version, tf.__version__,
                 tf.version.GIT_VERSION, " ".join(sorted(flags_of_cpu)) or platform.machine()):
        key.update(part.encode())
    cache = os.environ.get(
        "CONVMIXER_OP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "convmixer_lib")
    )
    library = os.path.join(cache, f"convmixer_ops-{key.hexdigest()[:16]}.so")
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
def gpu_visible():
    """Whether TensorFlow sees a GPU (then the layers use plain TensorFlow)."""
    return bool(tf.config.list_logical_devices("GPU"))


def op_library():
    """The compiled op library, or None (with the reason in `op_error()`).

    The ops have CPU kernels only: where TensorFlow sees a GPU, the layers use
    plain TensorFlow operations and this returns None.
    """
    global _op_library, _op_error
    with _lock:
        if _op_library is None and _op_error is None:
            if gpu_visible():
                _op_error = "a GPU is visible; the library's ops are for CPUs"
            else:
                _op_library, _op_error = _load()
    return _op_library


def _load():
    try:
        library = _compile()
        try:
            loaded = tf.load_op_library(library)
        except tf.errors.NotFoundError:  # a damaged cached file: build it again
            os.remove(library)
            loaded = tf.load_op_library(_compile())
    except (OSError, subprocess.CalledProcessError, tf.errors.NotFoundError) as error:
        details = getattr(error, "stderr", "") or ""
        reason = f"{error} {details[-2000:]}".strip()
        warnings.warn(
            "convmixer_lib: the library's C++ ops could not be compiled, so its fast "
            f"layers fall back to plain TensorFlow (same results, slower): {reason}",
            stacklevel=4,
        )
        return None, reason
    tf.RegisterGradient("GeluBatchNorm")(_gelu_batchnorm_grad)
    return loaded, None


def op_error():
    """Why the op library is unavailable, or None."""
    return _op_error


def _gelu_batchnorm_grad(op, dy, _batch_mean_grad, _batch_variance_grad):
    # batch_mean and batch_variance only feed the moving averages, which take
    # no gradient. First-order gradients only: the grad op has no gradient.
    dz, dgamma, dbeta = _op_library.gelu_batch_norm_grad(
        dy, op.inputs[0], op.inputs[1], op.outputs[1], op.outputs[2],
        epsilon=op.get_attr("epsilon"), is_training=op.get_attr("is_training"),
    )
    return [dz, dgamma, dbeta, None, None]
