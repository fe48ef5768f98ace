"""The throughput benchmark runs end to end (a few tiny steps; no time is asserted)."""

import os
import pathlib
import re
import subprocess
import sys

from convmixer_lib.backends import read_throughput

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"


def test_benchmark_prints_both_paths_and_the_speedup():
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_PATH"}  # random pixels
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--pairs", "2", "--steps", "1", "--warmup-steps", "1",
         "--batch-size", "32", "--filters", "16", "--depth", "1"],
        env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.endswith("example library ratio")
                  or line.split()[-3:] == ["example", "library", "ratio"])
    figure = r"\d+(\.\d+)? \(\d+(\.\d+)?–\d+(\.\d+)?\)"  # median (min–max)
    ratio = r"\d+\.\d\d× \(\d+\.\d\d×–\d+\.\d\d×\)"
    labels = ["training images/s", "inference images/s", "input pipeline images/s",
              "peak memory MiB", "machine GFLOP/s (matmul)"]
    for line, label in zip(lines[header + 1: header + 1 + len(labels)], labels, strict=True):
        assert line.startswith(label)
        assert re.search(rf"{figure}\s+{figure}\s+{ratio}$", line), line
    pairs = [line for line in lines if line.startswith("pair ")]
    assert [p.split(":")[0] for p in pairs] == ["pair 1", "pair 2"]
    assert all(re.fullmatch(r"pair \d: training \d+\.\d → \d+\.\d images/s \(\d+\.\d\d×\), "
                            r"inference \d+\.\d\d×", p) for p in pairs)
    match = re.fullmatch(r"training speedup: (\d+\.\d\d)× \(median of 2 pairs, "
                         r"range (\d+\.\d\d)–(\d+\.\d\d)\)", lines[-1])
    assert match, lines[-1]
    low, median, high = float(match[2]), float(match[1]), float(match[3])
    assert low <= median <= high
    assert not any(re.search(r"(^|\s)/\w", line) for line in lines)  # no machine paths


def test_benchmark_refuses_a_bad_step_count():
    result = subprocess.run([sys.executable, str(SCRIPT), "--steps", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "--steps: expected a positive integer, got 0" in result.stderr


def test_benchmark_measures_a_recipes_augmentation():
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_PATH"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--pairs", "1", "--steps", "1", "--warmup-steps", "1",
         "--batch-size", "32", "--filters", "16", "--depth", "1", "--augment", "randaugment"],
        env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].endswith("library augmentation: randaugment")
    assert any(line.startswith("input pipeline images/s") for line in lines)


def test_benchmark_measures_the_backends_each_against_the_first(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_PATH"}  # random pixels
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--pairs", "1", "--steps", "1", "--warmup-steps", "1",
         "--batch-size", "16", "--filters", "8", "--depth", "1",
         "--paths", "tensorflow", "jax", "torch"],
        env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert re.search(r"Keras [\d.]+, jax [\d.]+, torch [\d.+a-z]+;", lines[1]), lines[1]
    header = next(line for line in lines if line.startswith("median (min–max)"))
    assert header.split()[-5:] == ["tensorflow", "jax", "torch", "jax/tensorflow",
                                   "torch/tensorflow"]
    assert re.fullmatch(r"pair 1: training [\d.]+ → [\d.]+ → [\d.]+ images/s "
                        r"\(\d+\.\d\d×, \d+\.\d\d×\), inference \d+\.\d\d×, \d+\.\d\d×",
                        next(line for line in lines if line.startswith("pair 1")))
    assert [line.split(":")[0] for line in lines[-2:]] == [
        "training speed of jax over tensorflow", "training speed of torch over tensorflow"]
    # The appendix on backends reads this output.
    output = tmp_path / "throughput.txt"
    output.write_text(result.stdout)
    table = read_throughput(output)
    assert list(table) == ["training images/s", "inference images/s", "input pipeline images/s",
                           "peak memory MiB", "machine GFLOP/s (matmul)"]
    for row in table.values():
        assert list(row) == ["tensorflow", "jax", "torch", "jax/tensorflow", "torch/tensorflow"]
        assert all(f["min"] == f["median"] == f["max"] for f in row.values())  # one pair
