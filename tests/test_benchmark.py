"""The throughput benchmark runs end to end (a few tiny steps; no time is asserted)."""

import os
import pathlib
import re
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"


def test_benchmark_prints_both_paths_and_the_speedup():
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_PATH"}  # random pixels
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "1", "--warmup-steps", "1",
         "--batch-size", "32", "--filters", "16", "--depth", "1"],
        env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["example", "library", "ratio"])
    for line, label in zip(lines[header + 1:], ["training images/s", "inference images/s",
                                                 "input pipeline images/s", "peak memory MiB"]):
        assert line.startswith(label)
        assert re.search(r"\d+(\.\d+)?\s+\d+(\.\d+)?\s+\d+\.\d\d×$", line), line
    assert re.fullmatch(r"training speedup: \d+\.\d\d×", lines[-1])


def test_benchmark_refuses_a_bad_step_count():
    result = subprocess.run([sys.executable, str(SCRIPT), "--steps", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "--steps must be at least 1" in result.stderr
