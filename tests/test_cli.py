import json

import pytest

from convmixer_lib.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "evaluate" in out


def test_train_then_evaluate(small_archive, tmp_path, capsys):
    path, _ = small_archive
    run_dir = tmp_path / "run"
    main(["train", "--data", str(path), "--run-dir", str(run_dir), "--epochs", "1",
          "--train-size", "64", "--batch-size", "32", "--filters", "8", "--depth", "1",
          "--patch-size", "4", "--kernel-size", "3", "--seed", "3"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_images"] == 64 and metrics["validation_images"] == 5000
    assert metrics["test_images"] == 1100 and metrics["batch_size"] == 32
    assert metrics["seed"] == 3 and metrics["epochs"] == 1
    assert {key: metrics["model"][key] for key in ("filters", "depth", "kernel_size",
                                                   "patch_size")} == {
        "filters": 8, "depth": 1, "kernel_size": 3, "patch_size": 4}
    assert "--train-size 64" in metrics["command"]
    capsys.readouterr()
    main(["evaluate", "--data", str(path), "--run-dir", str(run_dir)])
    out = capsys.readouterr().out
    assert "Test images: 1100" in out
    assert f"Test accuracy: {100 * metrics['test_accuracy']:.2f}%" in out


def test_errors_are_reported_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["evaluate", "--run-dir", str(tmp_path / "missing"), "--data", str(tmp_path)])
    assert exit.value.code == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--run-dir", str(tmp_path), "--epochs", "0"])
    assert "positive integer" in capsys.readouterr().err
