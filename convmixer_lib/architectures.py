"""The library's models by name, and the configuration that rebuilds one.

A run directory's config.json holds `model_config(model)`: the arguments of
the function that built the model, with `"architecture"` naming that function
in `BUILDERS` (left out for ConvMixer, as every ConvMixer record has it), so
`build_model(config)` builds the same model again.
"""

from .mlp_mixer import build_mlp_mixer
from .model import build_convmixer
from .resnet import build_resnet
from .vit import build_vit

BUILDERS = {"convmixer": build_convmixer, "resnet": build_resnet, "vit": build_vit,
            "mlp_mixer": build_mlp_mixer}
# The architectures with BatchNorm, which several devices can synchronize.
WITH_BATCHNORM = ("convmixer", "resnet")


def model_config(model):
    """The arguments that built `model` (a dict, what config.json holds).

    Raises:
        ValueError: if no function of `BUILDERS` built `model` (or
            `fast.accelerate` copied it from such a model).
    """
    config = getattr(model, "build_config", None)
    if config is None:
        raise ValueError(f"model {model.name!r} was not built by one of the library's "
                         f"builders ({', '.join(BUILDERS)}), so its configuration is unknown.")
    return dict(config)


def build_model(config, synchronized_batchnorm=False):
    """Build the model `config` (from `model_config`) describes.

    Args:
        config: a builder's arguments, with `"architecture"` (a key of
            `BUILDERS`; ConvMixer when absent).
        synchronized_batchnorm: as for `build_convmixer`, for the
            architectures with BatchNorm (`WITH_BATCHNORM`); ignored by the
            others.

    Raises:
        ValueError: if `"architecture"` is not a key of `BUILDERS`.
    """
    arguments = dict(config)
    architecture = arguments.pop("architecture", "convmixer")
    if architecture not in BUILDERS:
        raise ValueError(f"`architecture` must be one of {tuple(BUILDERS)}, got "
                         f"{architecture!r}.")
    if architecture in WITH_BATCHNORM:
        arguments["synchronized_batchnorm"] = synchronized_batchnorm
    return BUILDERS[architecture](**arguments)
