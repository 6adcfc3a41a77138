"""Several devices: DDP on 2 CPU processes (gloo), as a single run and inside a sweep."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_train, stop_at, write_mnist

from rnnexp.data.datamodule import InMemoryBatches

# 149 training images (150 after padding) in batches of 32: 5 batches on one process, 3 on each of two.
# 51 validation and 101 test images in batches of 5: the two processes get 26 and 25, 51 and 50.
DDP = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "data.val_size=51",
    "data.batch_size=32",
    "data.eval_batch_size=5",
    "model.hidden_size=8",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def odd_mnist(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("odd_mnist"), n_train=200, n_test=101)


@contextlib.contextmanager
def training(tmp_path: Path, data: Path, args: list[str], once: str):
    """`python -m rnnexp.train *args` in a process of its own (console in tmp_path/console.log), handed over
    once a file matching `once` (a glob under tmp_path) exists, within 120 s; killed on leaving."""
    env = {**os.environ, "RNNEXP_DATA_DIR": str(data), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    with open(tmp_path / "console.log", "w") as console:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rnnexp.train", *args], cwd=ROOT, env=env, stdout=console, stderr=console
        )
        try:
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob(once)) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert list(tmp_path.glob(once)), (tmp_path / "console.log").read_text()[-3000:]
            yield proc
        finally:
            proc.kill()


def one_process_test_acc(run_dir) -> float:
    """The best checkpoint's accuracy on the whole test set, computed here in one process."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "config.yaml")
    best = torch.load(
        run_dir / json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"], weights_only=True
    )
    data = instantiate(cfg.data, seed=cfg.seed)
    data.setup()
    model = instantiate(cfg.model, input_size=28, num_classes=10).eval()
    model.load_state_dict({k.removeprefix("model."): v for k, v in best["state_dict"].items() if k[:6] == "model."})
    x, y = data.splits["test"]
    with torch.no_grad():
        return (model(x.float() / 255).argmax(-1) == y).float().mean().item()


def test_shares_of_an_epoch_split_it_between_processes_and_resume_per_process():
    x, y = torch.zeros(11, 1, 1, dtype=torch.uint8), torch.arange(11)
    train = [InMemoryBatches(x, y, batch_size=2, shuffle=True, rank=r, world=2) for r in (0, 1)]
    served = [torch.cat([b for _, b in t]) for t in train]
    assert len(train[0]) == len(train[1]) == 3 and len(served[0]) == len(served[1]) == 6  # padded to step together
    assert sorted(torch.cat(served).tolist()) == sorted([*range(11), served[0][0].item()])  # all, one twice
    evaluate = [InMemoryBatches(x, y, batch_size=2, shuffle=False, rank=r, world=2) for r in (0, 1)]
    assert sorted(torch.cat([b for e in evaluate for _, b in e]).tolist()) == list(range(11))  # each once
    resumed = InMemoryBatches(x, y, batch_size=2, shuffle=True, rank=1, world=2)
    resumed.load_state_dict({"epoch": 0, "position": 1})
    assert torch.equal(torch.cat([b for _, b in resumed]), served[1][2:])


def test_ddp_run_trains_half_the_batches_per_process_and_records_once(tmp_path, odd_mnist):
    result = run_train(*DDP, data=odd_mnist, out=tmp_path, subprocess=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps_per_epoch"] == metrics["steps"] == 3
    assert metrics["test/acc"] == pytest.approx(one_process_test_acc(run), abs=1e-6)  # over both processes
    assert (result.stdout + result.stderr).count("test/acc=") == 1  # rank 1 neither logs nor records
    assert sorted(p.name for p in run.glob("*.log")) == ["train.log"]


def test_ddp_sweep_runs_each_job_once_in_its_own_folder(tmp_path, odd_mnist):
    result = run_train("-m", *DDP, "model=rnn,gru", data=odd_mnist, out=tmp_path, subprocess=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "runs").exists()  # the other processes ran their job, not a run of their own
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_model=rnn", "1_model=gru"]
    for job in jobs:
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["steps_per_epoch"] == 3 and "test/acc" in metrics
    assert (result.stdout + result.stderr).count("test/acc=") == 2


def test_sigterm_to_the_first_process_stops_a_sweep_job_at_a_saved_step_and_resume_completes_it(tmp_path, odd_mnist):
    # `kill <pid>` reaches rank 0 alone: all ranks decide the stop together, at one step that is saved. On resume
    # the other rank continues the job from that checkpoint too (its folder's name holds `=`, quoted for Hydra).
    sweep = ["-m", *DDP, "data.batch_size=8", "trainer.max_epochs=4", "callbacks.last.every_n_steps=2"]  # 40 steps
    with training(tmp_path, odd_mnist, sweep, once="multirun/*/*/checkpoints/last.ckpt") as proc:
        proc.send_signal(signal.SIGTERM)  # to rank 0 only
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, (tmp_path / "console.log").read_text()[-3000:]
    (folder,) = (tmp_path / "multirun").iterdir()
    (job,) = [p for p in folder.iterdir() if p.is_dir()]
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == "SIGTERM" and 0 < metrics["steps"] < 40
    assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == metrics["steps"]
    result = run_train(f"resume={folder}", data=odd_mnist, out=tmp_path, timeout=120, subprocess=True)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 40 and metrics["attempts"] == 2


# Three epochs of three steps per process, logged every 2 steps: the first epoch ends inside a logging interval.
EPOCHS = [*DDP, "trainer.max_epochs=3", "trainer.log_every_n_steps=2", "trainer.precision=32-true"]


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory, odd_mnist):
    out = tmp_path_factory.mktemp("ddp_reference")
    result = run_train(*EPOCHS, data=odd_mnist, out=out, subprocess=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (out / "runs").iterdir()
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize(
    "point, n, signal_name",
    [("train_call", 3, "SIGTERM"), ("validation_end", 1, "SIGKILL")],  # at the first epoch's last step; after it
)
def test_a_ddp_run_stopped_at_an_epochs_end_resumes_on_every_process_to_the_uninterrupted_run(
    tmp_path, odd_mnist, ddp_reference, point, n, signal_name
):
    stopped = stop_at(point, n, signal_name, *EPOCHS, data=odd_mnist, out=tmp_path, timeout=180)
    assert stopped.returncode != 0, stopped.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3  # the epoch's end

    resumed = run_train(
        f"resume={run}", data=odd_mnist, out=tmp_path, timeout=180, subprocess=True
    )  # every rank restores alike
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test/acc", "test/loss", "val/acc_best", "val/loss", "train/loss", "train/acc", "steps"):
        assert metrics[key] == ddp_reference[key], key


def test_a_rank_that_dies_takes_the_run_with_it_recorded_failed(tmp_path, odd_mnist):
    # gloo notices the lost peer and rank 0 ends with the loss as its error; without that (NCCL) it would wait in
    # its next collective, and rnnexp.ddp's watcher records the run failed and kills it after a grace period.
    run = [*DDP, "data.batch_size=8", "trainer.max_epochs=50", "callbacks.last.every_n_steps=2"]
    with training(tmp_path, odd_mnist, run, once="runs/*/checkpoints/last.ckpt") as proc:
        (child,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()  # rank 1, started by it
        os.kill(int(child), signal.SIGKILL)
        assert proc.wait(timeout=120) in (1, -signal.SIGKILL), (tmp_path / "console.log").read_text()[-3000:]
    (folder,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["reason"] == "resource"
    assert metrics["error"].startswith("the process of rank 1 was killed by SIGKILL")
    assert "error: the process of rank 1 was killed by SIGKILL" in (tmp_path / "console.log").read_text()
