"""Command line: `python -m convmixer_lib train|evaluate|predict|ablate|compare`, so
no step needs a notebook."""

import argparse
import contextlib
import os
import shlex
import sys
import tempfile

from .checks import (
    SEED_LIMIT,
    augmentation_argument,
    check_cifar10_path,
    check_directory,
    int_argument,
    number_argument,
    patch_size_argument,
    positive_int_argument,
)
from .choices import (
    AUGMENTATIONS,
    BASELINE_SEEDS,
    BUDGETS,
    CLASS_NAMES,
    COMPARISON_SEED,
    DEFAULT_SEED,
    FIRST_RATES,
    FLIP_ONLY_SUFFIX,
    MODELS,
    RAND_AUGMENT_PREFIX,
    RECIPES,
    SCHEDULES,
    TRAIN_IMAGES,
    check_names,
    configurations,
    recipe_settings,
)
from .records import check_run_files, check_trainable

# Each command imports what it needs from the library when it runs, and `main`
# starts TensorFlow just before, after parsing the arguments and running the
# command's `check`: `--help`, a refused option and a missing or finished file
# answer before TensorFlow starts.


def train_check(args):
    """What the parser cannot check alone: the recipe's settings with the options
    given, against each other; the data's path; a run directory that no
    settings could train (finished, or being trained)."""
    recipe_settings(args.recipe, **{key: getattr(args, key) for key in RECIPES[args.recipe]})
    check_cifar10_path(args.data)
    check_trainable(args.run_dir, args.overwrite)


def train_command(args, argv):
    from .data import load_splits
    from .fast import acceleration_unavailable
    from .recipes import train_recipe
    from .training import check_devices

    check_devices(args.devices)  # before the data are read
    splits = load_splits(args.data)
    print(f"Training images: {len(splits[0][0][: args.train_size])}, validation: "
          f"{len(splits[1][0])}, test: {len(splits[2][0])}")
    model = {key: getattr(args, key) for key in ("filters", "depth", "kernel_size", "patch_size")}
    unavailable = args.accelerate and args.devices in (None, 1) and acceleration_unavailable()
    if unavailable:
        print(f"note: training with Keras' own layers: {unavailable}")
    metrics = train_recipe(
        args.run_dir, splits, args.recipe, model=model, seed=args.seed,
        train_size=args.train_size, accelerated=args.accelerate, devices=args.devices,
        details={"command": shlex.join(["python", "-m", "convmixer_lib", *argv])},
        overwrite=args.overwrite,
        verbose="auto" if sys.stdout.isatty() else 2,  # one line per epoch in logs
        **{key: getattr(args, key) for key in RECIPES[args.recipe]},
    )
    print(
        f"Best epoch {metrics['best_epoch']} (validation accuracy "
        f"{100 * metrics['best_val_accuracy']:.2f}%, with flips "
        f"{100 * metrics['best_val_accuracy_flips']:.2f}%): test accuracy "
        f"{100 * metrics['test_accuracy']:.2f}%, with flips "
        f"{100 * metrics['test_accuracy_flips']:.2f}%, written to {args.run_dir}"
    )


def evaluate_check(args):
    check_run_files(args.run_dir)
    check_cifar10_path(args.data)


def evaluate_command(args, argv):
    from .data import load_splits
    from .fast import accelerate
    from .rundir import load_run_model
    from .training import evaluate

    model = accelerate(load_run_model(args.run_dir))  # the same predictions, sooner
    _, _, (x_test, y_test) = load_splits(args.data)
    results = evaluate(model, x_test, y_test, args.batch_size)
    print(f"Test images: {len(x_test)}")
    print(f"Test loss: {results['loss']:.4f}")
    print(f"Test accuracy: {100 * results['accuracy']:.2f}%")


def predict_check(args):
    from .images import load_image  # Pillow and NumPy only

    check_run_files(args.run_dir)
    for path in args.images:  # decoded here and again by predict: refused before TensorFlow
        load_image(path)


def predict_command(args, argv):
    from .explain import predict_images
    from .rundir import load_run_model

    model = load_run_model(args.run_dir)  # plain layers: no op to compile for a few images
    for result in predict_images(model, args.images, top=args.top, flips=args.flips):
        if result["note"]:
            print(f"note: {result['note']}")
        shown = ", ".join(f"{name} {probability:.1%}" for name, probability in result["top"])
        print(f"{result['path']}: {shown}")


def ablate_check(args):
    check_names(args.only, args.budget)
    check_directory("--folder", args.folder or ABLATION_FOLDERS[args.budget])
    check_cifar10_path(args.data)


def ablate_command(args, argv):
    from .ablations import run_sweep
    from .data import load_splits

    folder = args.folder or ABLATION_FOLDERS[args.budget]
    trained = run_sweep(folder, load_splits(args.data), only=args.only, budget=args.budget,
                        verbose="auto" if sys.stdout.isatty() else 2)
    print(f"Trained {len(trained)} configurations; every finished one is in {folder}")


# Where each budget's sweep keeps its runs by default.
ABLATION_FOLDERS = {"short": "results/ablations", "full": "results/ablations-full"}


def compare_check(args):
    check_directory("--folder", args.folder)
    check_cifar10_path(args.data)


def compare_command(args, argv):
    from .compare import run_comparison
    from .data import load_splits

    chosen = run_comparison(args.folder, load_splits(args.data), only=args.only,
                            seed=args.seed, verbose="auto" if sys.stdout.isatty() else 2)
    rates = ", ".join(f"{model} {rate:g}" for model, rate in chosen.items())
    print(f"Chosen peak learning rates: {rates}; every finished run is in {args.folder}")


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m convmixer_lib",
        description="Train and evaluate ConvMixer on CIFAR-10.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_dir = argparse.ArgumentParser(add_help=False)  # options of every command
    run_dir.add_argument("--run-dir", required=True, help="the run directory")
    data = argparse.ArgumentParser(add_help=False)  # options of the commands that read CIFAR-10
    data.add_argument("--data", help="cifar-10-python.tar.gz or its extracted folder "
                      "(default: $CIFAR10_PATH, else Keras' download)")

    t = commands.add_parser(
        "train", parents=[run_dir, data], help="train, keep the best epoch, test it",
        description="Train ConvMixer with a recipe: as the Keras example does, or "
        "faster. Rerun the same "
        "command to resume an interrupted run; a finished run is never overwritten "
        "unless --overwrite is given.")
    t.add_argument("--recipe", choices=RECIPES, default="example",
                   help="the settings below that are not given: 'example' as the Keras "
                   "example trains (10 epochs), 'fast' (4 epochs), 'fast3' (3 epochs), 'long' (25 epochs); see "
                   "convmixer_lib/choices.py (default: example)")
    t.add_argument("--epochs", type=positive_int_argument, help="recipe's by default")
    t.add_argument("--batch-size", type=positive_int_argument, help="recipe's by default")
    t.add_argument("--train-size", type=int_argument(1, TRAIN_IMAGES + 1), default=None,
                   help=f"use the first N of the {TRAIN_IMAGES:,} training images (default: all)")
    t.add_argument("--learning-rate", type=number_argument(0, low_open=True),
                   help="AdamW's (peak, after a warm-up), recipe's by default")
    t.add_argument("--weight-decay", type=number_argument(0), help="AdamW's, recipe's by default")
    t.add_argument("--schedule", choices=SCHEDULES,
                   help="learning rate: constant as in the example, or cosine decay "
                   "to 0 over the run (recipe's by default)")
    t.add_argument("--warmup", type=number_argument(0, 1, high_open=True),
                   help="fraction of the steps in which the learning rate rises from 0 "
                   "(cosine schedule only), recipe's by default")
    t.add_argument("--label-smoothing", type=number_argument(0, 1, high_open=True),
                   help="weight of the uniform target mixed into each label, recipe's by default")
    t.add_argument("--ema", type=number_argument(0, 1, high_open=True),
                   help="momentum of the averaged weights that are validated and kept, "
                   "0 for none; recipe's by default")
    t.add_argument("--bn-images", type=int_argument(0),
                   help="re-estimate the averaged weights' BatchNorm statistics on this "
                   "many training images before each validation, 0 for none; recipe's "
                   "by default")
    t.add_argument("--augment", type=augmentation_argument,
                   help=f"augmentation of the training batches: one of {', '.join(AUGMENTATIONS)} "
                   f"or {RAND_AUGMENT_PREFIX}N (torchvision's RandAugment at magnitude N of 30, then "
                   f"flips and shifts; {RAND_AUGMENT_PREFIX}N{FLIP_ONLY_SUFFIX}: then flips alone); "
                   "recipe's by default")
    t.add_argument("--seed", type=int_argument(0, SEED_LIMIT), default=DEFAULT_SEED,
                   help=f"default: {DEFAULT_SEED}")
    t.add_argument("--filters", type=positive_int_argument, default=256, help="channels, default: 256")
    t.add_argument("--depth", type=positive_int_argument, default=8, help="blocks, default: 8")
    t.add_argument("--kernel-size", type=positive_int_argument, default=5, help="depthwise kernel, default: 5")
    t.add_argument("--patch-size", type=patch_size_argument, default=2,
                   help="a divisor of the images' 32 pixels (default: 2)")
    t.add_argument("--accelerate", action=argparse.BooleanOptionalAction, default=True,
                   help="train with the library's fast CPU layers (GELU and BatchNorm "
                   "in one layer, a faster depthwise filter gradient): the same model, "
                   "faster to train on a CPU; ignored where they cannot help "
                   "(default: --accelerate)")
    t.add_argument("--devices", type=positive_int_argument, default=None,
                   help="train data-parallel on N GPUs, each batch split across them "
                   "(default: every GPU when there are several, else one device)")
    t.add_argument("--overwrite", action="store_true",
                   help="discard the weights and records already in --run-dir, finished "
                   "or not, and train anew")
    t.set_defaults(run=train_command, check=train_check)

    e = commands.add_parser(
        "evaluate", parents=[run_dir, data], help="evaluate a run's best weights on the test set",
        description="Evaluate the best weights of a run directory on the 10,000 "
        "CIFAR-10 test images.")
    e.add_argument("--batch-size", type=positive_int_argument, default=128,
                   help="default: 128")
    e.set_defaults(run=evaluate_command, check=evaluate_check)

    p = commands.add_parser(
        "predict", parents=[run_dir], help="classify image files with a run's best weights",
        description="Classify image files (PNG, JPEG, WebP, BMP, GIF, TIFF, ...) of up "
        "to 50 million pixels, resized to the model's 32x32 pixels, with the best "
        "weights of a run directory; print the most probable classes of each.")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top", type=int_argument(1, len(CLASS_NAMES) + 1), default=3,
                   help="classes to print per image (default: 3)")
    p.add_argument("--flips", action="store_true",
                   help="average each image's prediction with its mirror image's")
    p.set_defaults(run=predict_command, check=predict_check)
    short, full = BUDGETS["short"], BUDGETS["full"]
    a = commands.add_parser(
        "ablate", parents=[data], help="train the ablation sweep, skipping finished runs",
        description=f"Train every configuration of the ablation sweep ({len(configurations())}: "
        "one design choice changed at a time around ConvMixer-256/8, and the baseline with "
        f"{len(BASELINE_SEEDS)} seeds) with the {short['recipe']} recipe for {short['epochs']} epochs on the "
        f"first {short['train_size']:,} training images, or with --budget full "
        f"{len(configurations('full'))} of them for {full['epochs']} epochs on all the "
        "training images. Finished configurations are "
        "skipped and an interrupted one resumes, so rerun the command to continue.")
    a.add_argument("--budget", choices=BUDGETS, default="short",
                   help="short: every configuration on the first "
                   f"{short['train_size']:,} training images; full: the baseline and the "
                   "changes that matter most for the paper's claims on all of them "
                   "(default: short)")
    a.add_argument("--folder", default=None,
                   help="one run directory per configuration (default: "
                   + ", ".join(f"{folder} for {budget}"
                               for budget, folder in ABLATION_FOLDERS.items()) + ")")
    a.add_argument("--only", nargs="+", metavar="NAME",
                   help="train only these configurations, e.g. baseline-seed42 kernel_size-9")
    a.set_defaults(run=ablate_command, check=ablate_check)

    c = commands.add_parser(
        "compare", parents=[data],
        help="train ConvMixer, a ResNet, a ViT and an MLP-Mixer alike, skipping finished runs",
        description="For each model of about ConvMixer-256/8's size (" + ", ".join(MODELS)
        + "): choose the peak learning rate on validation (the ablation sweep's short "
        f"budget at {', '.join(f'{r:g}' for r in FIRST_RATES)}, and beyond the best while "
        "it is at an end), then train at that rate on all the training images with the "
        "fast recipe and test once. Finished runs are skipped and an interrupted one "
        "resumes, so rerun the command to continue.")
    c.add_argument("--folder", default="results/comparison",
                   help="grid runs in FOLDER/grid, full runs in FOLDER/<model> "
                   "(default: results/comparison)")
    c.add_argument("--only", nargs="+", choices=MODELS, metavar="MODEL",
                   help=f"run only these models, of {', '.join(MODELS)}")
    c.add_argument("--seed", type=int_argument(0, SEED_LIMIT), default=COMPARISON_SEED,
                   help=f"seed of the full-budget runs; another than {COMPARISON_SEED} trains "
                   "them again into FOLDER/<model>-seed<SEED>, to measure the noise "
                   f"(default: {COMPARISON_SEED})")
    c.set_defaults(run=compare_command, check=compare_check)
    return parser


@contextlib.contextmanager
def native_stderr_hidden():
    """Send what is written to file descriptor 2 (stderr, C++ code included) to a
    temporary file while the block runs; if the block raises, write it out
    before the error propagates, so nothing that explains a failure is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as hidden:
        os.dup2(hidden.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            hidden.seek(0)
            sys.stderr.write(hidden.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def main(argv=None):
    """Parse and check the arguments, start TensorFlow without the lines its C++
    code writes while it starts (oneDNN, CUDA drivers; `TF_CPP_MIN_LOG_LEVEL`
    does not silence them), then run the command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        getattr(args, "check", lambda args: None)(args)  # what the parser cannot check alone
        with native_stderr_hidden():
            import tensorflow as tf

            tf.config.list_physical_devices()  # the devices' start-up lines, now
        args.run(args, argv)
    except (ValueError, OSError) as error:  # FileNotFoundError, ConnectionError, a held lock
        parser.exit(2, f"error: {error}\n")
    except FloatingPointError as error:  # training.TrainingDiverged, or another non-finite number
        parser.exit(1, f"error: {error}\n")
    except KeyboardInterrupt:
        again = "the same command" + (" without --overwrite" if getattr(args, "overwrite", False)
                                      else "")
        resume = (f" Run {again} again to resume from the last finished epoch."
                  if args.command in ("train", "ablate", "compare") else "")
        parser.exit(130, f"\ninterrupted.{resume}\n")
