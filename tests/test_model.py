import math

import keras
import numpy as np
import pytest

from convmixer_lib.explain import predict_with_flips
from convmixer_lib.fast import accelerate, acceleration_unavailable
from convmixer_lib.fast.layers import DepthwiseConv
from convmixer_lib.model import (
    CLASSIFIER,
    STEM_CONV,
    build_convmixer,
    convmixer_config,
    depthwise_conv_name,
    pointwise_conv_name,
)
from convmixer_lib.training import evaluate


def test_convmixer_256_8_has_602890_parameters():
    # The example's text says "0.8 million"; the model it builds has 602,890.
    assert build_convmixer().count_params() == 602_890


def test_output_is_a_probability_per_class():
    model = build_convmixer(filters=16, depth=2, num_classes=7)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3)).astype("uint8")
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (5, 7)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_layers_are_found_by_name():
    model = build_convmixer(filters=24, depth=3, kernel_size=7, patch_size=4)
    assert model.get_layer(STEM_CONV).kernel.shape == (4, 4, 3, 24)
    for block in (1, 2, 3):
        depthwise = model.get_layer(depthwise_conv_name(block))
        assert isinstance(depthwise, keras.layers.DepthwiseConv2D)
        assert depthwise.kernel.shape == (7, 7, 24, 1)
        assert model.get_layer(pointwise_conv_name(block)).kernel.shape == (1, 1, 24, 24)
    assert model.get_layer(CLASSIFIER).units == 10
    with pytest.raises(ValueError):
        model.get_layer(depthwise_conv_name(4))


def test_feature_maps_keep_one_resolution():
    model = build_convmixer(filters=16, depth=2, patch_size=4)
    for name in (STEM_CONV, depthwise_conv_name(1), pointwise_conv_name(2)):
        assert model.get_layer(name).output.shape[1:] == (8, 8, 16)


def test_config_rebuilds_the_same_architecture():
    config = {"filters": 32, "depth": 2, "kernel_size": 3, "patch_size": 4,
              "image_size": 64, "num_classes": 5}
    assert convmixer_config(build_convmixer(**config)) == config
    # Only build_convmixer knows a model's configuration: a clone does not.
    with pytest.raises(ValueError, match="not built by `build_convmixer`"):
        convmixer_config(keras.models.clone_model(build_convmixer(**config)))


@pytest.mark.parametrize(
    "arguments, named",
    [
        ({"patch_size": 3}, "patch_size"),
        ({"patch_size": 5, "image_size": 32}, "patch_size"),
        ({"filters": 0}, "filters"),
        ({"depth": -1}, "depth"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"image_size": 0}, "image_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"filters": 2.5}, "filters"),
        ({"depth": True}, "depth"),
    ],
)
def test_bad_configuration_names_the_argument(arguments, named):
    with pytest.raises(ValueError, match=named):
        build_convmixer(**arguments)


def test_patch_size_error_lists_allowed_values():
    with pytest.raises(ValueError, match=r"\[1, 2, 4, 8, 16, 32\]"):
        build_convmixer(patch_size=3)


def test_wrong_input_shape_is_refused():
    model = build_convmixer(filters=8, depth=1)
    wrong = np.zeros((2, 28, 28, 3), "uint8")
    with pytest.raises(ValueError, match="incompatible"):
        model(wrong)
    # Keras' predict() checks the shape on TensorFlow and PyTorch, not on JAX
    # (its stateless call skips the check), so the library checks it itself.
    with pytest.raises(ValueError, match=r"\(n, 32, 32, 3\), got \(2, 28, 28, 3\)"):
        evaluate(model, wrong, np.zeros(2, "uint8"))
    with pytest.raises(ValueError, match=r"\(n, 32, 32, 3\)"):
        predict_with_flips(model, wrong)


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _batchnorm(x, gamma, beta, mean, variance, epsilon=1e-3):
    return gamma * (x - mean) / np.sqrt(variance + epsilon) + beta


def _forward_by_hand(model, image, patch_size, kernel_size, activation="gelu",
                     residual=True, batchnorm_first=False):
    """ConvMixer's forward pass on one image, written out in NumPy from the
    paper's definition, reading the model's weights by layer name. The
    variants change the activation, drop the residual connection or put
    BatchNorm before the activation."""
    def weights(name):
        return [np.asarray(w, "float64") for w in model.get_layer(name).get_weights()]

    activate = _gelu if activation == "gelu" else (lambda x: np.maximum(x, 0))

    def activate_and_normalize(x, name):
        statistics = weights(name)
        if batchnorm_first:
            return activate(_batchnorm(x, *statistics))
        return _batchnorm(activate(x), *statistics)

    x = np.asarray(image, "float64") / 255
    kernel, bias = weights(STEM_CONV)
    size = x.shape[0] // patch_size
    patches = x.reshape(size, patch_size, size, patch_size, 3).transpose(0, 2, 1, 3, 4)
    x = np.einsum("ijabc,abcf->ijf", patches, kernel) + bias
    x = activate_and_normalize(x, "stem_bn")
    pad = (kernel_size - 1) // 2
    for block in range(1, convmixer_config(model)["depth"] + 1):
        block_input = x
        kernel, bias = weights(depthwise_conv_name(block))
        padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
        x = sum(padded[a:a + size, b:b + size] * kernel[a, b, :, 0]
                for a in range(kernel_size) for b in range(kernel_size)) + bias
        x = activate_and_normalize(x, f"block{block}_depthwise_bn")
        if residual:
            x = x + block_input
        kernel, bias = weights(pointwise_conv_name(block))
        x = x @ kernel[0, 0] + bias
        x = activate_and_normalize(x, f"block{block}_pointwise_bn")
    kernel, bias = weights(CLASSIFIER)
    logits = x.mean(axis=(0, 1)) @ kernel + bias
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


def _randomize(model, rng):
    """Random weights, including BatchNorm's gamma, beta and moving statistics."""
    model.set_weights([
        rng.uniform(0.1, 1.0, w.shape) if "variance" in w.path
        else rng.normal(0, 0.5, w.shape) for w in model.weights
    ])


VARIANTS = [{}, {"activation": "relu"}, {"residual": False}, {"batchnorm_first": True}]


@pytest.mark.parametrize("accelerated", [False, True])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda variant: ",".join(
    f"{key}={value}" for key, value in variant.items()) or "paper")
def test_the_architecture_is_the_papers(variant, accelerated):
    """The model's output equals a hand-written forward pass: patch embedding,
    then per block depthwise conv -> GELU -> BN -> + residual, pointwise conv ->
    GELU -> BN, then average pooling, a linear layer and softmax; and so do the
    ablation chapter's variants of it."""
    model = build_convmixer(filters=4, depth=2, kernel_size=3, patch_size=2,
                            image_size=8, **variant)
    assert convmixer_config(model) == {"filters": 4, "depth": 2, "kernel_size": 3,
                                       "patch_size": 2, "image_size": 8,
                                       "num_classes": 10, **variant}
    rng = np.random.default_rng(0)
    _randomize(model, rng)
    if accelerated:
        if acceleration_unavailable():
            pytest.skip(acceleration_unavailable())
        model = accelerate(model)
        # Every variant trains with the library's depthwise convolution.
        assert isinstance(model.get_layer(depthwise_conv_name(1)), DepthwiseConv)
    images = rng.integers(0, 256, (3, 8, 8, 3)).astype("uint8")
    predicted = model.predict(images, verbose=0)
    for image, probabilities in zip(images, predicted):
        expected = _forward_by_hand(model, image, patch_size=2, kernel_size=3, **variant)
        np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)


def test_a_block_without_spatial_mixing_passes_its_input_through():
    """Zero depthwise kernel and BatchNorm scale and offset: the residual
    connection alone carries the block's input to the pointwise convolution."""
    model = build_convmixer(filters=8, depth=1, kernel_size=5, patch_size=4)
    rng = np.random.default_rng(1)
    _randomize(model, rng)
    model.get_layer(depthwise_conv_name(1)).set_weights(
        [np.zeros((5, 5, 8, 1)), np.zeros(8)])
    bn = model.get_layer("block1_depthwise_bn")
    bn.set_weights([np.zeros(8), np.zeros(8), *bn.get_weights()[2:]])
    probe = keras.Model(model.input, [model.get_layer("stem_bn").output,
                                      model.get_layer("block1_residual").output])
    block_input, block_output = probe.predict(
        rng.integers(0, 256, (2, 32, 32, 3)).astype("uint8"), verbose=0)
    assert np.abs(block_input).max() > 0.1
    np.testing.assert_allclose(block_output, block_input, atol=1e-6)


def test_the_fast_layers_say_in_one_line_why_not_on_another_backend():
    # `train` prints this reason as its note and trains with Keras' own layers.
    backend = keras.backend.backend()
    model = build_convmixer(filters=4, depth=1, kernel_size=3, patch_size=2, image_size=8)
    if backend == "tensorflow":
        pytest.skip("the fast layers' own backend")
    assert acceleration_unavailable() == (
        f"the fast layers need the TensorFlow backend, not {backend}")
    assert accelerate(model) is model
