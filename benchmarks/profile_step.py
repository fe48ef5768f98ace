"""Where a ConvMixer training step's time goes, with Keras' layers and with the library's.

A step's parts are timed by taking them out: the model is cloned with every
depthwise convolution (or every pointwise convolution, or every GELU +
BatchNorm) replaced by an identity, and the part's cost is the full step's
time less the step's time without it. What no part explains (stem,
pooling, classifier, loss, optimizer) is "rest".

    Keras layers   build_convmixer(): Keras' Activation("gelu"),
                   BatchNormalization and DepthwiseConv2D, as in the example
    library        accelerate(build_convmixer()): GeluBatchNorm and DepthwiseConv

Each layer set is measured in a process of its own, the two alternating for
`--pairs` pairs; within a process the four models take turns, `--rounds`
times `--steps` timed `train_on_batch` steps each after warm-up. It prints a
table of seconds per step (medians) and writes it, with the machine and the
date, as JSON:

    python benchmarks/profile_step.py --output results/step-profile.json
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import keras
import numpy as np

from convmixer_lib.checks import positive_int_argument as positive
from convmixer_lib.fast import accelerate, acceleration_unavailable
from convmixer_lib.fast.layers import GeluBatchNorm
from convmixer_lib.machine import vector_extensions
from convmixer_lib.model import build_convmixer
from convmixer_lib.rundir import environment

PATHS = {"Keras layers": False, "library": True}  # label: accelerated?
PARTS = {  # part: does this layer belong to it?
    "depthwise convolutions": lambda layer: "_depthwise_conv" in layer.name,
    "pointwise convolutions": lambda layer: "_pointwise_conv" in layer.name,
    "GELU + BatchNorm": lambda layer: isinstance(
        layer, (GeluBatchNorm, keras.layers.BatchNormalization))
    or (isinstance(layer, keras.layers.Activation) and layer.name.endswith("_gelu")),
}


class Skip(keras.layers.Layer):
    """The identity, whatever the replaced layer's call took (mask, training)."""

    def call(self, inputs, **kwargs):
        return inputs


def without(model, part):
    """A copy of `model` whose layers of `part` are identities (same shapes)."""
    def clone(layer):
        if PARTS[part](layer):
            return Skip(name=layer.name)
        return layer.__class__.from_config(layer.get_config())
    return keras.models.clone_model(model, clone_function=clone)


def step_seconds(accelerated, args):
    """Median seconds per training step of the full model and of each model
    without one part: {"step": s, part: s, ...}."""
    keras.utils.set_random_seed(0)
    full = build_convmixer(filters=args.filters, depth=args.depth)
    if accelerated:
        full = accelerate(full)
        if acceleration_unavailable():  # the "library" column would measure Keras' layers
            raise SystemExit(f"the library's layers are unavailable: {acceleration_unavailable()}")
    models = {"step": full, **{part: without(full, part) for part in PARTS}}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (args.batch_size, 1))
    for model in models.values():
        model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                      loss="sparse_categorical_crossentropy")
        for _ in range(2):
            model.train_on_batch(images, labels)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            for _ in range(args.steps):
                start = time.perf_counter()
                model.train_on_batch(images, labels)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def drive(args):
    runs = {label: [] for label in PATHS}
    for _ in range(args.pairs):
        for label in PATHS:
            child = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--measure", label, *sys.argv[1:]],
                capture_output=True, text=True)
            if child.returncode:
                raise SystemExit(f"measuring {label} failed:\n{child.stderr[-3000:]}")
            runs[label].append(json.loads(child.stdout.strip().splitlines()[-1]))
    profile = {}
    for label, measured in runs.items():
        seconds = {key: statistics.median(m[key] for m in measured) for key in measured[0]}
        parts = {part: seconds["step"] - seconds[part] for part in PARTS}
        profile[label] = {"step": seconds["step"], **parts,
                          "rest": seconds["step"] - sum(parts.values())}
    env = environment()
    record = {
        "model": f"ConvMixer-{args.filters}/{args.depth}",
        "batch_size": args.batch_size,
        "seconds_per_step": profile,
        "machine": f"{env['processor']} ({vector_extensions()}), {env['cpu_count']} CPUs",
        "tensorflow": env["tensorflow"],
        "keras": env["keras"],
        "date": str(datetime.date.today()),
        "command": "python benchmarks/profile_step.py " + " ".join(sys.argv[1:]),
        "method": f"{args.pairs} alternating pairs of processes, {args.rounds} rounds of "
                  f"{args.steps} train_on_batch steps per model; medians",
    }
    print(f"{record['model']}, batch {args.batch_size}: seconds per training step "
          f"({record['machine']})")
    print(f"{'':24}" + "".join(f"{label:>14}" for label in PATHS))
    for key in ["step", *PARTS, "rest"]:
        print(f"{key:24}" + "".join(f"{profile[label][key]:14.3f}" for label in PATHS))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=positive, default=2, help="process pairs (default 2)")
    parser.add_argument("--rounds", type=positive, default=3, help="turns per model (default 3)")
    parser.add_argument("--steps", type=positive, default=3, help="timed steps per turn (default 3)")
    parser.add_argument("--batch-size", type=positive, default=128)
    parser.add_argument("--filters", type=positive, default=256)
    parser.add_argument("--depth", type=positive, default=8)
    parser.add_argument("--output", help="write the profile here as JSON")
    parser.add_argument("--measure", choices=list(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(step_seconds(PATHS[args.measure], args)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
