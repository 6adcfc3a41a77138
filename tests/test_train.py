"""The real entry point, end to end, on tiny generated MNIST files."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
import yaml
from conftest import ROOT, TINY, run_train, scalars, terminal
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


def test_single_run_trains_tests_and_leaves_a_complete_run_folder(tmp_path, tiny_mnist):
    result = run_train(*TINY, "model=gru", "trainer.max_epochs=6", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only((tmp_path / "runs").iterdir())

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 6 and metrics["steps"] == 6 * 11
    assert metrics["test/acc"] > 0.8  # the tiny digits are learnable: far above chance (0.1)
    assert 0 < metrics["val/acc_best"] <= 1 and metrics["params"] > 0

    config = yaml.safe_load((run / "config.yaml").read_text())  # resolved, but for paths inside the run folder
    assert config["model"]["cell"] == "gru" and config["data"]["root"] == str(tiny_mnist)
    assert (
        config["paths"]["run_dir"] == "."
        and config["callbacks"]["checkpoint"]["dirpath"] == "${paths.run_dir}/checkpoints"
    )
    assert str(run) not in (run / "config.yaml").read_text()

    checkpoints = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and metrics["best_checkpoint"].startswith("checkpoints/epoch")
    assert (run / metrics["best_checkpoint"]).exists()  # relative to the run folder

    series = scalars(run)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "train/lr", "verdict/test_acc"):
        assert tag in series, sorted(series)
    assert [step for step, _ in series["train/loss"]][:3] == [1, 3, 5]  # every log_every_n_steps=2
    assert len(series["val/acc"]) == 6  # once per epoch
    assert "custom_scalars__config__" in EventAccumulator(str(run)).Reload().Tags()["tensors"]
    assert series["verdict/test_acc"] == [(metrics["steps"], metrics["test/acc"])] and "test/acc=" in result.stdout


def test_multirun_puts_jobs_side_by_side_named_by_what_differs(tmp_path, tiny_mnist):
    result = run_train("-m", "model=rnn,gru", *TINY, "trainer.max_epochs=1", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only((tmp_path / "multirun").iterdir())
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_model=rnn", "1_model=gru"]
    for job in jobs:
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["steps"] == 11
        assert "val/acc" in scalars(sweep / job)
        assert yaml.safe_load((sweep / job / "config.yaml").read_text())["model"]["cell"] == job.split("=")[1]


def test_diverging_run_stops_with_a_clear_error_and_keeps_its_record(tmp_path, tiny_mnist):
    diverge = ["model=rnn", "model.nonlinearity=relu", "optimizer=sgd", "optimizer.lr=1e6", "grad_clip=null"]
    result = run_train(*TINY, *diverge, "scheduler=none", data=tiny_mnist, out=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: training loss is nan")
    run = only((tmp_path / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "diverged" in metrics["error"]


def test_ctrl_c_stops_after_a_checkpointed_step_and_says_so(tmp_path, tiny_mnist):
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "rnnexp.train", *TINY, "trainer.max_epochs=1000"]
    with open(tmp_path / "console.log", "w") as console:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT, preexec_fn=terminal())
        try:
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob("runs/*/checkpoints/last.ckpt")) and time.monotonic() < deadline:
                time.sleep(0.2)  # wait until training is under way
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            assert proc.wait(timeout=60) != 0, (tmp_path / "console.log").read_text()[-3000:]
        finally:
            proc.kill()
    run = only((tmp_path / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["steps"] > 11
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == metrics["steps"]  # the last step was saved, nothing lost
    assert f"interrupted at step {metrics['steps']}" in (tmp_path / "console.log").read_text()
