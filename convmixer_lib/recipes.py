"""Training recipes: the example's, and faster ones built from Keras' own pieces.

A recipe is a dict of `run_experiment` settings plus the batch size and the
augmentation of `make_dataset`. `python -m convmixer_lib train --recipe NAME`
trains one; any option given beside it replaces that one setting.
"""

RECIPES = {
    # The Keras example: constant learning rate, flips and small shifts.
    "example": {
        "epochs": 10,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "schedule": "constant",
        "warmup": 0.0,
        "label_smoothing": 0.0,
        "ema": 0.0,
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
        "augment": "flip-translate",
    },
    # 25 epochs after locuslab's recipe for ConvMixer-256/8 on CIFAR-10, 92.6%
    # test accuracy there (batch 512, AdamW peaking at 0.05 after 2/5 of the
    # run, weight decay 0.005, RandAugment with 2 operations, flips), with the
    # fast recipe's smoothed targets and averaged weights added.
    "long": {
        "epochs": 25,
        "batch_size": 512,
        "learning_rate": 5e-2,
        "weight_decay": 5e-3,
        "schedule": "cosine",
        "warmup": 0.4,
        "label_smoothing": 0.1,
        "ema": 0.99,
        "augment": "randaugment",
    },
}


def recipe_settings(name, **changes):
    """The settings of recipe `name`, with `changes` (None values ignored) applied.

    Raises:
        ValueError: if `name` is not a recipe or a change names no setting.
    """
    if name not in RECIPES:
        raise ValueError(f"`recipe` must be one of {tuple(RECIPES)}, got {name!r}.")
    settings = dict(RECIPES[name])
    unknown = set(changes) - set(settings)
    if unknown:
        raise ValueError(
            f"{sorted(unknown)} are not recipe settings; they are {sorted(settings)}."
        )
    settings.update({key: value for key, value in changes.items() if value is not None})
    return settings


# Published logs to compare with, in history.json's form (fraction correct).
# The Keras example's validation accuracy per epoch, as printed on keras.io (one GPU).
EXAMPLE_LOG = [
    {"epoch": epoch, "val_accuracy": accuracy}
    for epoch, accuracy in enumerate(
        [0.1536, 0.7240, 0.7800, 0.8074, 0.7996, 0.8072, 0.8226, 0.8310, 0.8458, 0.8316],
        start=1)
]
