"""Training and inference throughput: the Keras example's code against the library's.

Both paths train ConvMixer with AdamW on the same images in one process:

    example   the Keras example's code as it is written: plain Keras layers
              (`activation_block` = Activation("gelu") + BatchNormalization),
              its tf.data pipeline (shuffle, batch, RandomCrop + RandomFlip)
              and `model.fit`.
    library   `build_convmixer(fused=True)` (GELU and BatchNorm in one layer,
              see convmixer_lib/fused.py), `make_dataset` and `model.fit`.

For each path it warms up (graph tracing), then times `fit` over `--steps`
batches, `predict` over the same images, and the input pipeline alone, and
records the peak resident memory of the process while that path runs. It
prints a table and, last, `training speedup: N.NN×` (library ÷ example).

    python benchmarks/throughput.py                      # ConvMixer-256/8, 10 steps
    python benchmarks/throughput.py --steps 1 --filters 32 --depth 1   # quick check

Images come from CIFAR-10's training set when `--data` or `$CIFAR10_PATH`
points to it, else random pixels (the speed does not depend on the pixels).
"""

import argparse
import gc
import os
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from convmixer_lib.data import load_cifar10, make_dataset
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


# --- Measurement. ---

class PeakMemory:
    """Peak resident memory (MiB) of this process while the `with` block runs."""

    def __enter__(self):
        self.peak = self._rss()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    @staticmethod
    def _rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(model, dataset, images, args):
    """Images/s of training (fit), inference (predict) and the input pipeline alone."""
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    with PeakMemory() as memory:
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
    return {"train": train, "infer": infer, "pipeline": pipeline, "memory": memory.peak}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--filters", type=int, default=256)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--data", help="CIFAR-10 archive or folder (default: $CIFAR10_PATH)")
    args = parser.parse_args()
    for name in ("steps", "warmup_steps", "batch_size", "filters", "depth"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    count = (args.steps + args.warmup_steps) * args.batch_size
    path = args.data or os.environ.get("CIFAR10_PATH")
    if path:
        (images, labels), _ = load_cifar10(path)
        images, labels, source = images[:count], labels[:count], f"CIFAR-10 from {path}"
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, (count, 1), dtype=np.uint8)
        source = "random pixels (no CIFAR-10 given)"
    if len(images) < count:
        parser.error(f"need {count} images for these steps, the data has {len(images)}")

    print(f"ConvMixer-{args.filters}/{args.depth}, batch {args.batch_size}, "
          f"{args.warmup_steps} warm-up + {args.steps} timed steps, images: {source}")
    env = environment()
    print(f"Machine: {env['processor']}, {env['cpu_count']} CPUs; "
          f"TensorFlow {env['tensorflow']}, Keras {env['keras']}")

    results = {}
    for path_name in ("example", "library"):
        keras.utils.set_random_seed(0)
        if path_name == "example":
            model = get_conv_mixer(filters=args.filters, depth=args.depth)
            dataset = example_make_dataset(images, labels, args.batch_size)
        else:
            model = build_convmixer(filters=args.filters, depth=args.depth, fused=True)
            dataset = make_dataset(images, labels, args.batch_size, training=True, seed=0)
        results[path_name] = measure(model, dataset, images, args)
        del model, dataset
        keras.backend.clear_session()
        gc.collect()

    rows = [("training images/s", "train", "{:.1f}"), ("inference images/s", "infer", "{:.1f}"),
            ("input pipeline images/s", "pipeline", "{:.0f}"), ("peak memory MiB", "memory", "{:.0f}")]
    print(f"{'':26}{'example':>10}{'library':>10}{'ratio':>8}")
    for label, key, fmt in rows:
        a, b = results["example"][key], results["library"][key]
        print(f"{label:26}{fmt.format(a):>10}{fmt.format(b):>10}{b / a:>7.2f}×")
    speedup = results["library"]["train"] / results["example"]["train"]
    print(f"training speedup: {speedup:.2f}×")


if __name__ == "__main__":
    main()
