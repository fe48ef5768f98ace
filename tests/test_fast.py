import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from convmixer_lib.fast import accelerate, ops
from convmixer_lib.fast.layers import DepthwiseConv, GeluBatchNorm
from convmixer_lib.fast.profile import plot_step_profile
from convmixer_lib.model import build_convmixer, convmixer_config, depthwise_conv_name
from convmixer_lib.rundir import load_plain_weights, save_plain_weights


def _random_statistics(model, rng):
    """Give every normalization layer non-trivial gamma, beta and moving statistics."""
    weights = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.BatchNormalization, GeluBatchNorm)):
            c = layer.gamma.shape[0]
            weights += [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                        rng.normal(0.3, 0.2, c), rng.uniform(0.1, 1.0, c)]
        else:
            weights += [w.numpy() for w in layer.weights]
    model.set_weights([np.asarray(w, "float32") for w in weights])


NO_COMPILER = shutil.which(os.environ.get("CXX", "g++")) is None


@pytest.fixture
def op():
    if ops.op_library() is None:
        pytest.skip(f"the library's ops are unavailable here: {ops.op_error()}")
    return ops.op_library()


def _count(model, kind):
    return sum(isinstance(layer, kind) for layer in model.layers)


@pytest.mark.parametrize("variant, fused_pairs", [
    ({}, 1 + 2 * 3), ({"residual": False}, 1 + 2 * 3),
    ({"batchnorm_first": True}, 0), ({"activation": "relu"}, 0),
])
def test_accelerate_swaps_the_layers_and_keeps_the_function(op, variant, fused_pairs):
    keras.utils.set_random_seed(0)
    model = build_convmixer(filters=16, depth=3, kernel_size=5, patch_size=4, **variant)
    _random_statistics(model, np.random.default_rng(7))
    fast = accelerate(model)
    assert fast is not model
    # GELU then BatchNorm, and only that pair, becomes one layer; every
    # depthwise convolution gets the library's filter gradient.
    assert _count(fast, GeluBatchNorm) == fused_pairs
    assert _count(fast, DepthwiseConv) == 3
    assert isinstance(fast.get_layer(depthwise_conv_name(1)), DepthwiseConv)
    assert [layer.name for layer in fast.layers] == [layer.name for layer in model.layers]
    assert convmixer_config(fast) == convmixer_config(model)
    images = np.random.default_rng(8).integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    np.testing.assert_allclose(fast.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-5)
    # The original model is left as it was.
    assert _count(model, GeluBatchNorm) == 0 and _count(model, DepthwiseConv) == 0


@pytest.mark.skipif(NO_COMPILER or bool(tf.config.list_logical_devices("GPU")),
                    reason="no C++ compiler, or a GPU: the layer uses plain TensorFlow")
def test_the_op_compiles_on_this_machine():
    assert ops.op_library() is not None, ops.op_error()


def test_plain_model_loads_fused_weights_and_predicts_the_same(tmp_path):
    # The fast path trains ConvMixer-256/8; a model of plain Keras layers must
    # read its weight file and give the same probabilities.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    fast = accelerate(build_convmixer())
    _random_statistics(fast, rng)
    fast.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                 loss="sparse_categorical_crossentropy")
    images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (64, 1))
    for _ in range(2):
        fast.train_on_batch(images[:32], labels[:32])
    path = str(tmp_path / "best.weights.h5")
    save_plain_weights(fast, path)

    plain = build_convmixer()
    plain.load_weights(path)
    difference = np.abs(plain.predict(images, verbose=0) - fast.predict(images, verbose=0))
    assert difference.max() <= 1e-4

    again = accelerate(build_convmixer())
    load_plain_weights(again, path)
    np.testing.assert_array_equal(again.predict(images, verbose=0), fast.predict(images, verbose=0))


@pytest.mark.parametrize("training", [True, False])
def test_layer_matches_keras_gelu_then_batchnorm(training):
    rng = np.random.default_rng(1)
    z = tf.constant(rng.normal(0.2, 1.5, (8, 5, 5, 16)), tf.float32)
    plain_gelu = keras.layers.Activation("gelu")
    plain_bn = keras.layers.BatchNormalization()
    layer = GeluBatchNorm()
    plain_bn.build(z.shape)
    layer.build(z.shape)
    stats = [rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.2, 16),
             rng.normal(0.3, 0.2, 16), rng.uniform(0.1, 1.0, 16)]
    plain_bn.set_weights(stats)
    layer.set_weights(stats)
    upstream = tf.constant(rng.normal(0, 1, z.shape), tf.float32)

    def run(fn, variables):
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = fn(z)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [z, *variables])]

    expected = run(lambda x: plain_bn(plain_gelu(x), training=training),
                   [plain_bn.gamma, plain_bn.beta])
    actual = run(lambda x: layer(x, training=training), [layer.gamma, layer.beta])
    for name, e, a in zip(["output", "d/dz", "d/dgamma", "d/dbeta"], expected, actual):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4, err_msg=name)
    # Training moves the moving averages the same way; inference leaves them.
    np.testing.assert_allclose(layer.moving_mean, plain_bn.moving_mean, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, plain_bn.moving_variance, atol=1e-6)
    assert training == (not np.allclose(layer.moving_mean, stats[2]))


# Trains a small model of the fast layers for two steps and prints its
# predictions and weights.
_FAST_MODEL_RUN = textwrap.dedent("""
    import json
    import keras, numpy as np
    from convmixer_lib.fast import ops
    from convmixer_lib.fast.layers import DepthwiseConv, GeluBatchNorm
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 4, strides=4)(keras.layers.Rescaling(1 / 255)(inputs))
    x = GeluBatchNorm()(x)
    x = GeluBatchNorm()(DepthwiseConv(5, padding="same")(x))
    outputs = keras.layers.Dense(10, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 32, 32, 3)).astype("uint8")
    labels = rng.integers(0, 10, (32, 1))
    for _ in range(2):
        model.train_on_batch(images, labels)
    print(json.dumps({"op": ops.op_library() is not None,
                      "predictions": model.predict(images, verbose=0).tolist(),
                      "weights": [w.tolist() for w in model.get_weights()]}))
""")


def _fast_model_run(env):
    result = subprocess.run([sys.executable, "-c", _FAST_MODEL_RUN], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plain_tensorflow_fallback_trains_like_the_ops(op, tmp_path):
    """The same fast model, once with the C++ ops and once without a compiler
    (plain TensorFlow): the same weights and predictions after two steps."""
    with_ops = _fast_model_run(dict(os.environ))
    without = _fast_model_run({**os.environ, "CXX": "no-such-compiler",
                               "CONVMIXER_OP_CACHE": str(tmp_path)})
    assert with_ops["op"] and not without["op"]
    np.testing.assert_allclose(without["predictions"], with_ops["predictions"], atol=1e-4)
    for a, b in zip(with_ops["weights"], without["weights"], strict=True):
        np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-4)


def test_op_refuses_statistics_of_the_wrong_size(op):
    z = tf.zeros((2, 3, 3, 8))
    v = tf.ones((7,))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must have shape \[8\]"):
        op.gelu_batch_norm(z, v, v, v, v, epsilon=1e-3, is_training=True)


def test_op_refuses_batch_statistics_of_an_empty_batch(op):
    z = tf.zeros((0, 4, 4, 8))
    v = tf.ones((8,))
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-empty"):
        op.gelu_batch_norm(z, v, v, v, v, epsilon=1e-3, is_training=True)


def test_statistics_stay_accurate_when_the_mean_dwarfs_the_spread(op):
    # GELU(z) ~ z for large z: a channel near 1000 with spread 0.01.
    z = tf.constant(1000 + np.random.default_rng(3).normal(0, 0.01, (64, 8)), tf.float32)
    v = tf.ones((8,))
    _, mean, variance = op.gelu_batch_norm(z, v, v, v, v, epsilon=1e-3, is_training=True)
    expected_mean, expected_variance = tf.nn.moments(tf.cast(z, tf.float64), [0])
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6)
    np.testing.assert_allclose(variance, expected_variance, rtol=1e-2)


def test_mixed_precision_computes_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = GeluBatchNorm()
        z = tf.constant(np.random.default_rng(4).normal(0, 1, (16, 8)), tf.float16)
        y = layer(z, training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert y.dtype == tf.float16
    assert layer.moving_mean.dtype == "float32"
    assert not np.allclose(layer.moving_mean.numpy(), 0)  # the update was not rounded away


def test_layer_needs_a_known_channel_axis():
    with pytest.raises(ValueError, match="known channel"):
        GeluBatchNorm(name="stem_bn").build((None, 4, 4, None))


def test_without_a_compiler_accelerate_returns_the_model_and_says_why(tmp_path):
    script = textwrap.dedent("""
        import numpy as np
        from convmixer_lib.fast import accelerate, acceleration_unavailable
        from convmixer_lib.model import build_convmixer
        model = build_convmixer(filters=8, depth=1)
        assert accelerate(model) is model
        print(acceleration_unavailable())
    """)
    env = {**os.environ, "CXX": "no-such-compiler", "CONVMIXER_OP_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no-such-compiler" in result.stdout  # the reason
    assert "fall back to plain TensorFlow" in result.stderr  # and the warning


@pytest.mark.parametrize("kernel_size, shape", [(5, (4, 16, 16, 64)), (3, (2, 7, 9, 70)),
                                                (9, (2, 8, 8, 16))])
def test_depthwise_layer_matches_keras(kernel_size, shape, op):
    """Outputs and all three gradients (input, kernel, bias) equal Keras' layer,
    also for channel counts that are not a multiple of 64 and kernels larger
    than the image's border."""
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(0, 1, shape), tf.float32)
    plain = keras.layers.DepthwiseConv2D(kernel_size, padding="same")
    fast = DepthwiseConv(kernel_size, padding="same")
    plain.build(shape)
    fast.build(shape)
    fast.set_weights(plain.get_weights())
    plain.bias.assign(rng.normal(0, 1, shape[-1]))
    fast.bias.assign(plain.bias)
    upstream = tf.constant(rng.normal(0, 1, shape), tf.float32)

    def run(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * upstream)
        return [layer(x), *tape.gradient(loss, [x, layer.kernel, layer.bias])]

    for name, e, a in zip(["output", "d/dx", "d/dkernel", "d/dbias"], run(plain), run(fast)):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max(), err_msg=name)


def test_depthwise_filter_gradient_is_a_sum_over_shifted_products(op):
    """A hand-written sum: dw[a, b] = sum x[i + a - 1, j + b - 1] * dy[i, j]."""
    x = np.arange(1, 17, dtype="float32").reshape(1, 4, 4, 1)
    dy = np.zeros((1, 4, 4, 1), "float32")
    dy[0, 0, 0, 0] = 1.0  # only the top-left output pixel
    dw = op.conv_mixer_depthwise_conv_filter_grad(x, dy, tf.zeros((3, 3, 1)), pad=1)
    expected = np.array([[0, 0, 0], [0, 1, 2], [0, 5, 6]], "float32")  # zeros outside
    np.testing.assert_array_equal(dw[..., 0], expected)


def test_depthwise_layer_outside_the_op_is_keras_layer():
    layer = DepthwiseConv(3, strides=2, padding="valid")
    x = tf.constant(np.random.default_rng(6).normal(0, 1, (2, 9, 9, 4)), tf.float32)
    plain = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid")
    plain.build(x.shape)
    layer.build(x.shape)
    layer.set_weights(plain.get_weights())
    np.testing.assert_allclose(layer(x), plain(x), rtol=1e-6)


def test_step_profile_stacks_the_parts_to_the_whole_step():
    profile = {"Keras layers": {"step": 2.0, "convolutions": 1.2, "rest": 0.8},
               "library": {"step": 1.0, "convolutions": 0.7, "rest": 0.3}}
    figure = plot_step_profile(profile)
    (ax,) = figure.axes
    bars = ax.patches
    assert len(bars) == 4
    for row, label in enumerate(profile):
        widths = [b.get_width() for b in bars if round(b.get_y() + b.get_height() / 2) == row]
        assert sum(widths) == pytest.approx(profile[label]["step"])
    assert [t.get_text() for t in ax.get_yticklabels()] == list(profile)
    assert ax.get_xlabel() == "seconds per training step" and ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["convolutions", "rest"]
