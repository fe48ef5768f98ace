"""Are patches all you need? ConvMixer beside a ResNet, a ViT and an MLP-Mixer
of about its size, trained alike.

The protocol, one model at a time (`run_comparison`):
1. Choose the peak learning rate on validation: train the model at each rate
   of `FIRST_RATES` with the ablation sweep's short budget, and while the
   best rate is at an end of those tried, the next rate of `RATES` beyond it
   (ties go to the lower rate; a rate whose run diverges counts as the worst).
   These runs never see the test images.
2. Train the model at its chosen rate with the full budget and test it once.
   Where two models end close, the same run with another seed (`seed`)
   measures their noise.
Every run uses the fast recipe (its schedule, smoothed targets, averaged
weights and augmentation) with the averaged weights' BatchNorm statistics
re-estimated (`BN_IMAGES`), the same seed and Keras' own layers (not
`fast.accelerate`), so the minutes of runs on one machine compare like with
like. Only the peak rate is chosen per model; the rest of the recipe was
tuned on ConvMixer. The models match in parameters, not in operations.
"""

import os

import matplotlib.pyplot as plt
from matplotlib.ticker import PercentFormatter

from .architectures import build_model
from .checks import SEED_LIMIT, check_int, check_list
from .choices import BUDGETS, FIRST_RATES, MODELS, RATES
from .choices import COMPARISON_SEED as SEED
from .flops import forward_flops
from .plots import MARKERS
from .recipes import train_recipe
from .records import read_json, run_state, write_json
from .training import TrainingDiverged

MODEL_NAMES = {"convmixer": "ConvMixer-256/8", "resnet": "ResNet-44", "vit": "ViT-128/4",
               "mlp_mixer": "MLP-Mixer-128/4"}
# Every run validates and keeps its averaged weights with BatchNorm statistics
# re-estimated on 5,120 training images, as the 3-epoch recipe does. Without,
# the BatchNorm models are judged with statistics that lag their weights: the
# grid's ConvMixer run at peak rate 0.001 (grid/convmixer-lr0.001) scored
# 35.30% of the validation images after its last epoch with the raw weights'
# statistics and 71.98% with re-estimated ones, which would favour the
# LayerNorm models (ViT, MLP-Mixer: for them the re-estimate changes nothing
# but costs its pass over the images) and the higher rates.
BN_IMAGES = 5120
# Written into a grid run that diverged: the rate counts as tried, and worst.
DIVERGED = "diverged.json"


def grid_run_name(model, rate):
    """Run directory name of `model` at peak learning rate `rate`: e.g. `vit-lr0.003`."""
    return f"{model}-lr{rate:g}"


def full_run_name(model, seed=SEED):
    """Run directory name of `model`'s full-budget run: the model's key (`vit`)
    with the protocol's seed, `vit-seed1` with seed 1."""
    return model if seed == SEED else f"{model}-seed{seed}"


def grid_results(folder, model):
    """{rate: best validation accuracy} of `model`'s finished grid runs in
    `folder`; a run that diverged (`DIVERGED`) counts as 0.

    Raises:
        ValueError: if a finished grid run was trained with another rate,
            budget or seed than the grid's.
    """
    short = BUDGETS["short"]
    tried = {}
    for rate in RATES:
        run_dir = os.path.join(folder, "grid", grid_run_name(model, rate))
        if os.path.exists(os.path.join(run_dir, DIVERGED)):
            tried[rate] = 0.0
            continue
        if run_state(run_dir) != "finished":
            continue
        metrics = read_json(os.path.join(run_dir, "metrics.json"))
        expected = {"recipe": short["recipe"], "epochs": short["epochs"],
                    "train_images": short["train_size"], "seed": SEED, "learning_rate": rate,
                    "bn_images": BN_IMAGES}
        found = {key: metrics.get(key) for key in expected}
        if found != expected:
            raise ValueError(f"{run_dir!r} was trained with {found}, not the grid's "
                             f"{expected}; move it away to train it again.")
        tried[rate] = metrics["best_val_accuracy"]
    return tried


def rates_to_try(tried):
    """The rates the protocol trains next, given `tried` ({rate: validation accuracy}).

    Returns:
        `FIRST_RATES` not yet tried; once all are, the neighbour in `RATES`
        beyond the best rate if it is the lowest or highest tried (and
        `RATES` goes on); else nothing: the choice is made.
    """
    missing = [rate for rate in FIRST_RATES if rate not in tried]
    if missing:
        return missing
    best = max(tried, key=tried.get)
    index = RATES.index(best)
    if best == min(tried) and index > 0 and RATES[index - 1] not in tried:
        return [RATES[index - 1]]
    if best == max(tried) and index < len(RATES) - 1 and RATES[index + 1] not in tried:
        return [RATES[index + 1]]
    return []


def chosen_rate(tried):
    """The rate with the best validation accuracy in `tried` ({rate: accuracy});
    of equal ones, the lowest."""
    return max(sorted(tried), key=tried.get)


def _train(run_dir, splits, model, budget, rate, test, verbose, seed=SEED):
    recipe = BUDGETS[budget]
    print(f"{os.path.basename(run_dir)}: training into {run_dir}")
    train_recipe(run_dir, splits, recipe["recipe"], model=MODELS[model], seed=seed,
                 train_size=recipe["train_size"], epochs=recipe["epochs"],
                 learning_rate=rate, bn_images=BN_IMAGES, accelerated=False, test=test,
                 details={"comparison": model, "budget": budget, **_size(MODELS[model])},
                 verbose=verbose)


def _size(config):
    """`parameters` and forward `flops` per image of the model `config` builds."""
    built = build_model(config)
    return {"parameters": built.count_params(), "flops": forward_flops(built)}


def run_comparison(folder, splits, only=None, seed=SEED, verbose="auto"):
    """Run the protocol for every model (or those in `only`) into `folder`.

    Grid runs go to `folder/grid/<model>-lr<rate>`, the full-budget run to
    `folder/<model>`. Finished runs are skipped and an interrupted one
    resumes, so the same call continues wherever it stopped. With another
    `seed` than `SEED`, the full-budget run is trained with that seed into
    `folder/<model>-seed<seed>` (`full_run_name`); the grid is the same.

    Returns:
        {model: chosen rate} for the models it ran.

    Raises:
        ValueError: if `only` names a model not in `MODELS`, or a finished
            run was trained otherwise than the protocol now asks (another
            budget, seed or rate).
    """
    check_int("seed", seed, 0, SEED_LIMIT)
    only = check_list("only", only)
    unknown = set(only or ()) - set(MODELS)
    if unknown:
        raise ValueError(f"no models named {sorted(unknown)}; the comparison has "
                         f"{list(MODELS)}.")
    chosen = {}
    for model in MODELS:
        if only and model not in only:
            continue
        while next_rates := rates_to_try(grid_results(folder, model)):
            run_dir = os.path.join(folder, "grid", grid_run_name(model, next_rates[0]))
            try:
                _train(run_dir, splits, model, "short", next_rates[0], test=False,
                       verbose=verbose)
            except TrainingDiverged as error:  # a rate too high: tried, and worst
                print(f"{os.path.basename(run_dir)} diverged ({error.what}): the rate "
                      "counts as the worst")
                write_json(os.path.join(run_dir, DIVERGED),
                           {"learning_rate": next_rates[0], "error": str(error)})
        chosen[model] = chosen_rate(grid_results(folder, model))
        run_dir = os.path.join(folder, full_run_name(model, seed))
        if run_state(run_dir) == "finished":
            _check_rate(run_dir, read_json(os.path.join(run_dir, "metrics.json")),
                        chosen[model])
        else:  # an unfinished run resumes only with the same rate (`train_recipe`)
            _train(run_dir, splits, model, "full", chosen[model], test=True, verbose=verbose,
                   seed=seed)
    return chosen


def describe_models():
    """Each model's size and cost, computed from the model itself.

    Returns:
        A list of dicts, one per model of `MODELS`: `model` (its key), `name`,
        `config`, `input` (what the first layer sees, in words: "2×2
        patches", or ResNet's "pixels"), `blocks` (residual blocks),
        `width` (channels or token width, a string: ResNet's stages give
        three), `parameters` and `flops` (forward floating-point operations
        per image, `flops.forward_flops`).
    """
    rows = []
    for model, config in MODELS.items():
        if config.get("architecture") == "resnet":
            shape = {"input": "pixels", "blocks": 3 * config["blocks_per_stage"],
                     "width": "–".join(str(width) for width in config["widths"])}
        else:
            patch = config["patch_size"]
            shape = {"input": f"{patch}×{patch} patches", "blocks": config["depth"],
                     "width": str(config.get("filters", config.get("dim")))}
        rows.append({"model": model, "name": MODEL_NAMES[model], "config": config, **shape,
                     **_size(config)})
    return rows


def comparison_results(folder):
    """What `run_comparison` recorded in `folder`, one dict per model of `MODELS`.

    Returns:
        A list of dicts: `describe_models()`'s keys, `grid` ({rate: best
        validation accuracy} of the finished grid runs), `rate` (the chosen
        rate, None until the grid is complete), `at_edge` (True if that rate
        is the lowest or highest of `RATES`: the search could go no further)
        and, once the full-budget run
        is finished, `metrics` and `history` (its metrics.json and
        history.json), `minutes` (its epochs' seconds summed / 60) and
        `processors` (the machines its segments ran on, in words: minutes
        compare only on one); else those are None. `other_seeds`: the
        finished full-budget runs with other seeds, a list of dicts with
        `seed`, `metrics` and `history`, by seed.
    """
    results = []
    for row in describe_models():
        model = row["model"]
        grid = grid_results(folder, model)
        rate = chosen_rate(grid) if grid and not rates_to_try(grid) else None
        run_dir = os.path.join(folder, model)
        finished = run_state(run_dir) == "finished"
        metrics = read_json(os.path.join(run_dir, "metrics.json")) if finished else None
        if finished:
            _check_rate(run_dir, metrics, rate)
        results.append({
            **row, "grid": grid, "rate": rate, "at_edge": rate in (RATES[0], RATES[-1]),
            "metrics": metrics,
            "history": read_json(os.path.join(run_dir, "history.json")) if finished else None,
            "minutes": sum(metrics["seconds_per_epoch"]) / 60 if finished else None,
            "processors": sorted({segment["environment"]["processor"]
                                  for segment in metrics["segments"]}) if finished else None,
            "other_seeds": _other_seeds(folder, model, rate),
        })
    return results


def _check_rate(run_dir, metrics, rate):
    """Refuse a full-budget run trained at another peak rate than the grid's `rate`."""
    if metrics["learning_rate"] != rate:
        chosen = "no rate yet" if rate is None else f"{rate:g}"
        raise ValueError(f"{run_dir!r} was trained at peak rate {metrics['learning_rate']:g}, "
                         f"but the grid now chooses {chosen}; move it away to train it again.")


def _other_seeds(folder, model, rate):
    """The finished full-budget runs of `model` in `folder` with another seed than
    `SEED`, each checked to be trained at the grid's chosen `rate`."""
    runs = []
    prefix = f"{model}-seed"  # as `full_run_name` names them
    names = os.listdir(folder) if os.path.isdir(folder) else []
    for name in names:
        run_dir = os.path.join(folder, name)
        if not (name.startswith(prefix) and name[len(prefix):].isdigit()
                and run_state(run_dir) == "finished"):
            continue
        metrics = read_json(os.path.join(run_dir, "metrics.json"))
        if full_run_name(model, metrics["seed"]) != name:
            raise ValueError(f"{run_dir!r} was trained with seed {metrics['seed']}, not the "
                             "seed its name says; move it away to train it again.")
        _check_rate(run_dir, metrics, rate)
        runs.append({"seed": metrics["seed"], "metrics": metrics,
                     "history": read_json(os.path.join(run_dir, "history.json"))})
    return sorted(runs, key=lambda run: run["seed"])


def plot_comparison(results, title="Test accuracy against what each model costs"):
    """Each model's full-budget test accuracy against its training minutes,
    its forward operations per image and its parameters: three panels that
    share the accuracy axis and start each cost at 0, one marker per model
    (the n-th model of `MODELS` with `plots.MARKERS[n]` and colour `C<n>`, as
    `plots.plot_validation_curves` draws the same models in that order).

    Args:
        results: as `comparison_results` returns them; models whose
            full-budget run has not finished are left out.

    Raises:
        ValueError: if no model's full-budget run has finished.
    """
    finished = [(index, row) for index, row in enumerate(results) if row["metrics"] is not None]
    if not finished:
        raise ValueError("no full-budget run has finished yet: there is nothing to plot.")
    cores = sorted({segment["environment"]["cpu_count"] for _, row in finished
                    for segment in row["metrics"]["segments"]})
    on = f" ({cores[0]} CPU cores)" if len(cores) == 1 else ""
    figure, axes = plt.subplots(1, 3, figsize=(12, 4), sharey=True)
    costs = [("minutes", 1, f"minutes of training{on}"),
             ("flops", 1e6, "millions of operations per image (forward)"),
             ("parameters", 1e3, "thousands of parameters")]
    for ax, (key, unit, label) in zip(axes, costs):
        for index, row in finished:
            ax.plot(row[key] / unit, row["metrics"]["test_accuracy"], MARKERS[index],
                    color=f"C{index}", markersize=9, label=row["name"])
        ax.set_xlim(0, 1.1 * max(row[key] / unit for _, row in finished))
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes[0].legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    return figure
