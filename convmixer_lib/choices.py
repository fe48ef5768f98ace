"""What a run can be asked for, as plain Python values and the few functions
that check a choice against them: CIFAR-10's class names, the augmentations,
learning-rate schedules and training recipes, the ablation sweep's budgets and
configurations, and the compared models with their learning-rate grid.

Nothing here imports TensorFlow, Keras or Matplotlib, so the command line
checks its options against these values, and answers `--help`, before it
imports them (TensorFlow alone takes seconds to start). The modules that use
them (`data`, `recipes`, `ablations`, `compare`, ...) import them from here.
"""

import re

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

AUGMENTATIONS = ("flip-translate", "randaugment", "none")
# "randaugment-m12": torchvision's RandAugment at magnitude 12 of 30, then the
# flips and shifts of "flip-translate" (`randaugment.py`); any magnitude from 0
# to 30 may be given. "randaugment-m12-flip": the same RandAugment, then flips
# alone, as locuslab trains (their crop keeps the whole image).
RAND_AUGMENT_PREFIX = "randaugment-m"
FLIP_ONLY_SUFFIX = "-flip"
MAX_MAGNITUDE = 30  # the top of torchvision's RandAugment scale


def rand_augment_magnitude(augment):
    """The RandAugment magnitude named by `augment` ("randaugment-m12" and
    "randaugment-m12-flip": 12), None for the other augmentations
    (`AUGMENTATIONS`).

    Raises:
        ValueError: if `augment` names no augmentation.
    """
    if augment in AUGMENTATIONS:
        return None
    match = re.fullmatch(rf"{RAND_AUGMENT_PREFIX}(0|[1-9][0-9]?)(?:{FLIP_ONLY_SUFFIX})?",
                         augment, re.ASCII) if isinstance(augment, str) else None
    if match and int(match.group(1)) <= MAX_MAGNITUDE:
        return int(match.group(1))
    raise ValueError(
        f"`augment` must be one of {AUGMENTATIONS} or {RAND_AUGMENT_PREFIX}<magnitude> "
        f"(or {RAND_AUGMENT_PREFIX}<magnitude>{FLIP_ONLY_SUFFIX}) with a whole magnitude "
        f"from 0 to {MAX_MAGNITUDE}, got {augment!r}.")


SCHEDULES = ("constant", "cosine")
# CIFAR-10's 50,000 training images, split as the example does: the first
# 5,000 validate, the other 45,000 train.
VALIDATION_SIZE = 5000
TRAIN_IMAGES = 50_000 - VALIDATION_SIZE
# The seed `train` uses unless told, that of every first run in results/; a run
# with another seed is named after it (e.g. `fast3-seed1`).
DEFAULT_SEED = 42

RECIPES = {
    # The Keras example's settings: a constant learning rate, flips, and the
    # small shifts its RandomCrop(32, 32) meant but did not do (chapter 1).
    "example": {
        "epochs": 10,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "constant",
        "warmup": 0.0,
        "label_smoothing": 0.0,
        "ema": 0.0,
        "bn_images": 0,
        "augment": "flip-translate",
    },
    # The example's 10-epoch accuracy in 4 epochs: a 10× higher peak learning
    # rate reached by a warm-up and annealed to 0, smoothed targets and
    # averaged weights. Test-time flips are measured for every run.
    "fast": {
        "epochs": 4,
        "batch_size": 128,
        "learning_rate": 1e-2,
        "weight_decay": 5e-3,
        "schedule": "cosine",
        "warmup": 0.25,
        "label_smoothing": 0.1,
        "ema": 0.99,
        "bn_images": 0,
        "augment": "flip-translate",
    },
    # 25 epochs after the ConvMixer authors' CIFAR-10 recipe for ConvMixer-256/8
    # (github.com/locuslab/convmixer-cifar10, 92.6% test accuracy there: batch
    # 512, AdamW peaking at 0.05 after 2/5 of the run, weight decay 0.005,
    # torchvision's RandAugment with 2 operations at magnitude 12, flips), with
    # the fast recipe's smoothed targets and averaged weights added, and
    # BatchNorm statistics re-estimated for the averaged weights on 10 batches.
    "long": {
        "epochs": 25,
        "batch_size": 512,
        "learning_rate": 5e-2,
        "weight_decay": 5e-3,
        "schedule": "cosine",
        "warmup": 0.4,
        "label_smoothing": 0.1,
        "ema": 0.99,
        "bn_images": 5120,
        "augment": "randaugment-m12",
    },
}
# The fast recipe in 3 epochs, with BatchNorm statistics of its own for the
# averaged weights: re-estimated on 5,120 training images (40 batches) before
# every validation instead of borrowed from the raw weights.
RECIPES["fast3"] = {**RECIPES["fast"], "epochs": 3, "bn_images": 5120}


def recipe_settings(name, **changes):
    """The settings of recipe `name`, with `changes` (None values ignored) applied.

    Raises:
        ValueError: if `name` is not a recipe, a change names no setting, or a
            setting is out of its range (`checks.check_recipe`).
    """
    from .checks import check_recipe  # checks.py imports this module

    if name not in RECIPES:
        raise ValueError(f"`recipe` must be one of {tuple(RECIPES)}, got {name!r}.")
    settings = dict(RECIPES[name])
    unknown = set(changes) - set(settings)
    if unknown:
        raise ValueError(
            f"{sorted(unknown)} are not recipe settings; they are {sorted(settings)}."
        )
    settings.update({key: value for key, value in changes.items() if value is not None})
    return check_recipe(settings)


BASELINE = {"filters": 256, "depth": 8, "kernel_size": 5, "patch_size": 2}
# One factor at a time around the baseline; the baseline's own value is not repeated.
FACTORS = {
    "kernel_size": [3, 7, 9],
    "patch_size": [1, 4],
    "depth": [4, 12],
    "filters": [128, 384],
    "residual": [False],
    "activation": ["relu"],
    "batchnorm_first": [True],
}
BASELINE_SEEDS = (42, 1, 2)
# The budgets, both the fast recipe's 4 epochs: "short" on the first 20,000
# training images, "full" on all 45,000 (None): 2.25 times the images, 2.24
# times the steps (`ablations.budget_steps`).
BUDGETS = {
    "short": {"recipe": "fast", "epochs": 4, "train_size": 20_000},
    "full": {"recipe": "fast", "epochs": 4, "train_size": None},
}
# The configurations the full budget retrains, in training order: the
# baseline's first two seeds, then the changes whose short-budget verdict goes
# against the paper (small kernels ahead of large ones, 8 blocks ahead of 12)
# or costs most (no residual connection).
FULL_BUDGET_RUNS = ("baseline-seed42", "baseline-seed1", "kernel_size-9", "depth-12",
                    "residual-False", "kernel_size-3")


def check_budget(budget):
    """Return `budget` if it is a key of `BUDGETS`, else raise ValueError naming it."""
    if budget not in BUDGETS:
        raise ValueError(f"`budget` must be one of {tuple(BUDGETS)}, got {budget!r}.")
    return budget


def configurations(budget="short"):
    """Every configuration of the sweep at `budget`, in training order: the short
    budget's baseline seeds first, then one factor at a time; the full budget's
    as `FULL_BUDGET_RUNS` lists them.

    Returns:
        A list of dicts: `name` (the run directory's), `model` (the
        `build_convmixer` arguments), `seed`, `factor` (the argument changed,
        None for the baseline) and `value` (its value, None for the baseline).

    Raises:
        ValueError: if `budget` is not a key of `BUDGETS`.
    """
    check_budget(budget)
    runs = [{"name": f"baseline-seed{seed}", "model": dict(BASELINE), "seed": seed,
             "factor": None, "value": None} for seed in BASELINE_SEEDS]
    for factor, values in FACTORS.items():
        for value in values:
            runs.append({"name": f"{factor}-{value}", "model": {**BASELINE, factor: value},
                         "seed": BASELINE_SEEDS[0], "factor": factor, "value": value})
    if budget == "full":
        by_name = {run["name"]: run for run in runs}
        runs = [by_name[name] for name in FULL_BUDGET_RUNS]
    return runs


def check_names(only, budget="short"):
    """Refuse names in `only` that are not configurations of `budget`'s sweep.

    Raises:
        ValueError: naming the unknown names and the sweep's configurations, or
            if `only` is one string rather than a list of names.
    """
    from .checks import check_list  # checks.py imports this module

    names = [run["name"] for run in configurations(budget)]
    unknown = set(check_list("only", only) or ()) - set(names)
    if unknown:
        raise ValueError(f"no configurations named {sorted(unknown)}; the {budget} budget's "
                         f"sweep has {names}.")


# The seed of every comparison run; a second seed measures the noise.
COMPARISON_SEED = 42
# Each model's configuration for `architectures.build_model`, each within 15%
# of ConvMixer-256/8's parameters. The three patch models embed the same 2x2
# patches into 256 tokens and differ in how they mix them.
MODELS = {
    "convmixer": {"filters": 256, "depth": 8, "kernel_size": 5, "patch_size": 2},
    "resnet": {"architecture": "resnet", "blocks_per_stage": 7, "widths": [16, 32, 64]},
    "vit": {"architecture": "vit", "dim": 128, "depth": 4, "heads": 4, "mlp_dim": 256,
            "patch_size": 2},
    "mlp_mixer": {"architecture": "mlp_mixer", "dim": 128, "depth": 4, "token_mlp_dim": 64,
                  "channel_mlp_dim": 512, "patch_size": 2},
}
# Peak learning rates, half a decade apart; the search starts from the middle three.
RATES = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
FIRST_RATES = (0.001, 0.003, 0.01)
