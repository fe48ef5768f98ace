"""Training and inference throughput: the Keras example's code against the
library's, or the library's model on Keras' three backends.

Every path trains ConvMixer with AdamW on the same images:

    example   the Keras example's code as it is written: plain Keras layers
              (`activation_block` = Activation("gelu") + BatchNormalization),
              its tf.data pipeline (shuffle, batch, RandomCrop + RandomFlip)
              and `model.fit`.
    library   `accelerate(build_convmixer())` (see convmixer_lib/fast/),
              `make_dataset` (with `--augment`'s augmentation) and `model.fit`.
    tensorflow, jax, torch
              `build_convmixer()` with Keras' own layers, `make_dataset` and
              `model.fit`, on that Keras backend (`KERAS_BACKEND`).

Each measurement runs in a process of its own, and the paths (`--paths`,
default: example library) alternate (example, library, example, library, ...)
for `--pairs` pairs. A process warms
up (graph tracing), then times `fit` over `--steps` batches, `predict` over the
same images and the input pipeline alone, and reports its peak resident memory.
The table gives each figure's median and range over the pairs and its ratio
to the first path's, then every pair's ratios, and last, for two paths,
`training speedup: N.NN× (median of K pairs, range A–B)`.
It warns when other processes used the CPU while it measured, and when the
machine's own speed (a fixed matrix product timed in every process) varied.

    python benchmarks/throughput.py                      # ConvMixer-256/8, 5 pairs
    python benchmarks/throughput.py --pairs 1 --steps 1 --filters 32 --depth 1   # quick check
    python benchmarks/throughput.py --augment randaugment-m12 --batch-size 512   # the long recipe's input
    python benchmarks/throughput.py --paths tensorflow jax torch                 # the backends

The input pipeline's images/s, measured alone, says whether a recipe's
augmentation can keep up with training on the same cores.

Images come from CIFAR-10's training set when `--data` or `$CIFAR10_PATH`
points to it, else random pixels (the speed does not depend on the pixels).
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from convmixer_lib.checks import augmentation_argument, positive_int_argument as positive
from convmixer_lib.data import load_cifar10, make_dataset
from convmixer_lib.fast import accelerate, acceleration_unavailable
from convmixer_lib.machine import vector_extensions
from convmixer_lib.model import build_convmixer
from convmixer_lib.rundir import environment


# --- The Keras example's code (Sayak Paul, 2021), unchanged but for parameters. ---

def example_make_dataset(images, labels, batch_size, image_size=32):
    auto = tf.data.AUTOTUNE
    augmentation_layers = [
        keras.layers.RandomCrop(image_size, image_size),
        keras.layers.RandomFlip("horizontal"),
    ]

    def augment_images(images):
        for layer in augmentation_layers:
            images = layer(images, training=True)
        return images

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(batch_size * 10)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda x, y: (augment_images(x), y), num_parallel_calls=auto)
    return dataset.prefetch(auto)


def activation_block(x):
    x = layers.Activation("gelu")(x)
    return layers.BatchNormalization()(x)


def conv_stem(x, filters, patch_size):
    x = layers.Conv2D(filters, kernel_size=patch_size, strides=patch_size)(x)
    return activation_block(x)


def conv_mixer_block(x, filters, kernel_size):
    x0 = x
    x = layers.DepthwiseConv2D(kernel_size=kernel_size, padding="same")(x)
    x = layers.Add()([activation_block(x), x0])  # Residual.
    x = layers.Conv2D(filters, kernel_size=1)(x)
    return activation_block(x)


def get_conv_mixer(image_size=32, filters=256, depth=8, kernel_size=5, patch_size=2,
                   num_classes=10):
    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(scale=1.0 / 255)(inputs)
    x = conv_stem(x, filters, patch_size)
    for _ in range(depth):
        x = conv_mixer_block(x, filters, kernel_size)
    x = layers.GlobalAvgPool2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


# --- One measurement, in a process of its own. ---

BACKENDS = ("tensorflow", "jax", "torch")
PATHS = ("example", "library", *BACKENDS)


def measure(path_name, args):
    """Images/s of training (fit), inference (predict) and the input pipeline
    alone, and the process's peak resident memory (MiB), for one path."""
    count = (args.steps + args.warmup_steps) * args.batch_size
    data = args.data or os.environ.get("CIFAR10_PATH")
    if data:
        (images, labels), _ = load_cifar10(data)
        images, labels = images[:count], labels[:count]
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, (count, 1), dtype=np.uint8)
    if len(images) < count:
        raise SystemExit(f"need {count} images for these steps, the data has {len(images)}")
    before = machine_speed()
    keras.utils.set_random_seed(0)
    if path_name == "example":
        model = get_conv_mixer(filters=args.filters, depth=args.depth)
        dataset = example_make_dataset(images, labels, args.batch_size)
    else:
        model = build_convmixer(filters=args.filters, depth=args.depth)
        if path_name == "library":
            model = accelerate(model)
            if acceleration_unavailable():
                print(f"note: the library's path runs without its fast layers: "
                      f"{acceleration_unavailable()}", file=sys.stderr)
        dataset = make_dataset(images, labels, args.batch_size, training=True, seed=0,
                               augment=args.augment)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(dataset.take(args.warmup_steps), epochs=1, shuffle=False, verbose=0)
    start = time.perf_counter()
    model.fit(dataset.take(args.steps), epochs=1, shuffle=False, verbose=0)
    train = args.steps * args.batch_size / (time.perf_counter() - start)

    model.predict(images[: args.batch_size], batch_size=args.batch_size, verbose=0)
    start = time.perf_counter()
    model.predict(images, batch_size=args.batch_size, verbose=0)
    infer = len(images) / (time.perf_counter() - start)

    start = time.perf_counter()
    batches = sum(1 for _ in dataset.take(args.steps))
    pipeline = batches * args.batch_size / (time.perf_counter() - start)
    memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    after = machine_speed()
    return {"train": train, "infer": infer, "pipeline": pipeline, "memory": memory,
            "machine": min(before, after), "machine_range": [before, after]}


def machine_speed():
    """GFLOP/s of a fixed float32 matrix product in TensorFlow: the same work in
    every process, so a change between processes is the machine's, not the code's
    (a busy neighbour on a shared host shows here, though no process of ours does)."""
    a = tf.random.stateless_normal((1024, 1024), seed=(0, 0))
    product = tf.function(lambda a: tf.linalg.matmul(a, a))
    product(a).numpy()
    start, repeats = time.perf_counter(), 40
    for _ in range(repeats):
        product(a).numpy()
    return repeats * 2 * 1024**3 / (time.perf_counter() - start) / 1e9


# --- The driver: alternate the paths, each in a new process, and watch the CPU. ---

def _cpu_seconds_by_process():
    """CPU seconds (user + system) used so far by every process: {pid: (name, s)}."""
    ticks = os.sysconf("SC_CLK_TCK")
    usage = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue  # the process ended meanwhile
            name = stat[stat.index("(") + 1: stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            usage[int(pid)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return usage


def run_one(path_name, args):
    """Measure one path in a new process (on its Keras backend: TensorFlow but
    for the jax and torch paths); also return the CPU seconds that other
    processes used meanwhile, by process name."""
    command = [sys.executable, os.path.abspath(__file__), "--measure", path_name,
               *sys.argv[1:]]
    backend = path_name if path_name in BACKENDS else "tensorflow"
    before = _cpu_seconds_by_process()
    start = time.monotonic()
    child = subprocess.run(command, capture_output=True, text=True,
                           env={**os.environ, "KERAS_BACKEND": backend})
    wall = time.monotonic() - start
    others = _others(before, _cpu_seconds_by_process())
    if child.returncode:
        raise SystemExit(f"the {path_name} measurement failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1]), others, wall


def _others(before, after):
    """CPU seconds used between two snapshots by each process name, but this one's.
    (A measuring child has ended by the second snapshot, so it is not counted.)"""
    used = {}
    for pid, (name, seconds) in after.items():
        if pid != os.getpid() and seconds > before.get(pid, (name, 0.0))[1]:
            used[name] = used.get(name, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    return used


def _busiest(used, wall):
    """The processes that used more than 2% of a core, busiest first."""
    busy = sorted((s, name) for name, s in used.items() if s > 0.02 * wall)
    return ", ".join(f"{name} {s:.1f} s" for s, name in reversed(busy)) or "many small ones"


def _median_range(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def drive(args):
    env = environment()
    source = "CIFAR-10 training images" if (args.data or os.environ.get("CIFAR10_PATH")) \
        else "random pixels (no CIFAR-10 given)"
    print(f"ConvMixer-{args.filters}/{args.depth}, batch {args.batch_size}, "
          f"{args.warmup_steps} warm-up + {args.steps} timed steps per process, "
          f"{args.pairs} pair{'s' * (args.pairs > 1)}, images: {source}; "
          f"library augmentation: {args.augment}")
    backends = "".join(f", {name} {importlib.metadata.version(name)}"
                       for name in ("jax", "torch") if name in args.paths)
    print(f"Machine: {env['processor']} ({vector_extensions()}), {env['cpu_count']} CPUs; "
          f"TensorFlow {env['tensorflow']}, Keras {env['keras']}{backends}; "
          f"{datetime.date.today()}")
    warnings = []
    before = _cpu_seconds_by_process()
    time.sleep(5)
    idle = _others(before, _cpu_seconds_by_process())
    if sum(idle.values()) > 0.05 * 5:
        warnings.append(f"other processes used {sum(idle.values()):.1f} CPU s in the 5 s "
                        f"before the first measurement ({_busiest(idle, 5)})")
    paths = args.paths
    results = {path_name: [] for path_name in paths}
    for _ in range(args.pairs):
        for path_name in paths:
            result, others, wall = run_one(path_name, args)
            results[path_name].append(result)
            if sum(others.values()) > 0.05 * wall:
                warnings.append(f"other processes used {sum(others.values()):.0f} CPU s "
                                f"during a {wall:.0f} s {path_name} measurement "
                                f"({_busiest(others, wall)})")

    rows = [("training images/s", "train", "{:.1f}"), ("inference images/s", "infer", "{:.1f}"),
            ("input pipeline images/s", "pipeline", "{:.0f}"),
            ("peak memory MiB", "memory", "{:.0f}"),
            ("machine GFLOP/s (matmul)", "machine", "{:.0f}")]  # before or after, lower
    first, others = paths[0], paths[1:]
    ratio_names = ["ratio"] if len(paths) == 2 else [f"{p}/{first}" for p in others]
    print(f"{'median (min–max)':26}" + "".join(f"{name:>24}" for name in paths + ratio_names))
    ratios = {}  # ratios[key][path]: that path's figure over the first path's, per pair
    for label, key, fmt in rows:
        figures = {p: [r[key] for r in results[p]] for p in paths}
        ratios[key] = {p: [b / a for a, b in zip(figures[first], figures[p])] for p in others}
        print(f"{label:26}" + "".join(f"{_median_range(figures[p], fmt):>24}" for p in paths)
              + "".join(f"{_median_range(ratios[key][p], '{:.2f}×'):>24}" for p in others))
    for i in range(args.pairs):
        trained = " → ".join(f"{results[p][i]['train']:.1f}" for p in paths)
        train_ratios = ", ".join(f"{ratios['train'][p][i]:.2f}×" for p in others)
        infer_ratios = ", ".join(f"{ratios['infer'][p][i]:.2f}×" for p in others)
        print(f"pair {i + 1}: training {trained} images/s ({train_ratios}), "
              f"inference {infer_ratios}")
    speeds = [speed for rs in results.values() for r in rs for speed in r["machine_range"]]
    if max(speeds) > 1.15 * min(speeds):
        warnings.append(f"the machine's own speed varied from {min(speeds):.0f} to "
                        f"{max(speeds):.0f} GFLOP/s between measurements (a shared host)")
    for warning in warnings:
        print(f"warning: {warning}; the figures may be low or uneven")
    pairs = f"{args.pairs} pair{'s' * (args.pairs > 1)}"
    for p in others:
        speedup = ratios["train"][p]
        name = "training speedup" if len(paths) == 2 else f"training speed of {p} over {first}"
        print(f"{name}: {statistics.median(speedup):.2f}× (median of {pairs}, range "
              f"{min(speedup):.2f}–{max(speedup):.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=positive, default=5,
                        help="example/library pairs (default 5)")
    parser.add_argument("--steps", type=positive, default=10,
                        help="timed training steps (default 10)")
    parser.add_argument("--warmup-steps", type=positive, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--batch-size", type=positive, default=128)
    parser.add_argument("--filters", type=positive, default=256)
    parser.add_argument("--depth", type=positive, default=8)
    parser.add_argument("--data", help="CIFAR-10 archive or folder (default: $CIFAR10_PATH)")
    parser.add_argument("--augment", type=augmentation_argument, default="flip-translate",
                        help="the library's augmentation, as `make_dataset` names it "
                        "(default: flip-translate)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=["example", "library"],
                        help="the paths to measure, in this order; ratios are to the first "
                        "(default: example library)")
    parser.add_argument("--measure", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if len(args.paths) < 2 or len(set(args.paths)) < len(args.paths):
        parser.error(f"--paths: expected two or more different paths, got {' '.join(args.paths)}")
    if args.measure:
        print(json.dumps(measure(args.measure, args)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
