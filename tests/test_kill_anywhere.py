"""A run stopped anywhere, then resumed with `resume=`, ends exactly as the run never stopped: the same
metrics, the same best checkpoint (one file, the same weights), the same TensorBoard curves with no step
logged twice.

The stops come from the run's own progress (tests/kill_at.py counts the points the run reaches and
signals itself at the chosen one), so each lands at the same place however loaded the machine is.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, only, run_train, scalars, stop_at, trained
from conftest import record as metrics

# Two layers with dropout (the RNG state matters), epochs cut short by limit_train_batches (8 of 11
# batches, in training steps of 3, 3 and 2), last.ckpt every 4 optimizer steps (at the first training
# step at or after each multiple: steps 6 and 14, and after each validation at 8, 16 and 24), logged
# every 2 steps (a checkpoint falls inside a logging interval).
RUN = [*TINY, "model.layers=2", "model.dropout=0.2", "++trainer.limit_train_batches=8", "steps_per_call=3"]
RUN += ["callbacks.last.every_n_steps=4"]

# (point, n, signal): where the first attempt stops. Checkpoint writes in order: last.ckpt at step 6 (1),
# the best and last.ckpt after the first validation (2, 3), last.ckpt at step 14 (4), ...
STOPS = [
    ("train_call", 1, "SIGKILL"),  # before the first checkpoint
    ("train_call", 2, "SIGKILL"),  # mid-epoch, right after a checkpoint
    ("train_call", 4, "SIGKILL"),  # mid-epoch, steps after a checkpoint
    ("checkpoint_writing", 2, "SIGKILL"),  # the best checkpoint being written
    ("checkpoint_written", 2, "SIGKILL"),  # the best written, last.ckpt of that validation not yet
    ("checkpoint_writing", 3, "SIGKILL"),  # last.ckpt being written after a validation
    ("validation_end", 1, "SIGKILL"),  # right after each validation
    ("validation_end", 2, "SIGKILL"),
    ("validation_end", 3, "SIGKILL"),
    ("epoch_end", 1, "SIGKILL"),
    ("fit_end", 1, "SIGKILL"),  # between fit and test
    ("test_batch", 1, "SIGKILL"),  # during test
    ("record_completed", 1, "SIGKILL"),  # just before the record is completed
    ("train_call", 3, "SIGTERM"),  # during an epoch's last step: the stop waits for its validation
    ("train_call", 9, "SIGTERM"),  # during the last epoch's last step
    ("validation_end", 3, "SIGINT"),  # Ctrl-C after the last validation
    ("test_batch", 1, "SIGINT"),  # Ctrl-C during test
    ("train_call", 2, "SIGHUP"),  # the terminal closed
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_mnist):
    return trained(*RUN, data=tiny_mnist, out=tmp_path_factory.mktemp("reference"))


def best_checkpoint(run):
    return only((run / "checkpoints").glob("epoch*.ckpt"))


@pytest.mark.parametrize("point, n, signal_name", STOPS, ids=[f"{p}-{n}-{s}" for p, n, s in STOPS])
def test_a_run_stopped_anywhere_resumes_to_the_uninterrupted_run(
    tmp_path, tiny_mnist, reference, point, n, signal_name
):  # noqa: E501
    stopped = stop_at(point, n, signal_name, *RUN, data=tiny_mnist, out=tmp_path)
    assert stopped.returncode != 0, f"the run was not stopped at {point} {n}: {stopped.stderr[-2000:]}"
    run = only((tmp_path / "runs").iterdir())
    if signal_name != "SIGKILL":  # stopped in order: saved and recorded
        assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
        assert metrics(run)["status"] == "interrupted" and metrics(run)["signal"] == signal_name

    resumed = run_train(f"resume={run}", data=tiny_mnist, out=tmp_path)  # main(argv), as `python -m` calls it
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours, theirs = metrics(run), metrics(reference)
    assert ours["status"] == "completed", ours
    for key in ("test/acc", "test/loss", "val/acc_best", "val/acc", "val/loss", "train/loss", "train/acc"):
        assert ours.get(key) == theirs[key], key
    for key in ("steps", "epochs", "steps_per_epoch", "best_checkpoint"):
        assert ours.get(key) == theirs[key], key
    assert best_checkpoint(run).name == best_checkpoint(reference).name  # one best file, the reference's
    assert not list((run / "checkpoints").glob(".*"))  # no half-written file left behind
    weights = torch.load(best_checkpoint(run), weights_only=True)["state_dict"]
    expected = torch.load(best_checkpoint(reference), weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)

    ours, theirs = scalars(run), scalars(reference)  # as TensorBoard shows them
    assert sorted(ours) == sorted(theirs)
    for tag in theirs:
        steps = [step for step, _ in ours[tag]]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice"
        assert ours[tag] == theirs[tag], tag


def test_a_signal_the_run_was_started_to_ignore_stays_ignored(tmp_path, tiny_mnist, reference):
    """Under nohup (SIGHUP ignored) a closed terminal must not stop the run: it ends as if nothing happened."""
    run_ = stop_at("train_call", 2, "SIGHUP", *RUN, data=tiny_mnist, out=tmp_path, ignored=("SIGHUP",))
    assert run_.returncode == 0, run_.stderr[-3000:]
    run = only((tmp_path / "runs").iterdir())
    assert metrics(run)["status"] == "completed" and metrics(run)["attempts"] == 1
    assert metrics(run)["test/acc"] == metrics(reference)["test/acc"]
