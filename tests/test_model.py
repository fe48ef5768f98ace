import keras
import numpy as np
import pytest

from convmixer_lib.model import (
    CLASSIFIER,
    STEM_CONV,
    build_convmixer,
    convmixer_config,
    depthwise_conv_name,
    pointwise_conv_name,
)


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
    with pytest.raises(ValueError):
        model.predict(np.zeros((2, 28, 28, 3)), verbose=0)
