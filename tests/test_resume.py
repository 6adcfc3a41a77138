"""Nothing lost: a killed, interrupted or preempted run continues exactly where it stopped, in its
own folder, and ends as the same run uninterrupted would; a sweep continues job by job."""

import json
import shutil
import signal

import pytest
import torch
from conftest import ROOT, TINY, cli, only, run_train, scalars, stop_at, trained
from conftest import record as metrics

# Dropout and two layers, so that the RNG state matters; a checkpoint every 3 steps, mostly mid-epoch
# (11 batches an epoch); logged every 2 steps, so a checkpoint often falls inside a logging interval;
# three optimizer steps per training step (4 an epoch: 3, 3, 3 and 2), so logging falls inside them.
# Three epochs (TINY's): the stops come at points of the run's progress (tests/kill_at.py), not while
# a long run goes on.
EXACT = [*TINY, "model.layers=2", "model.dropout=0.2", "callbacks.last.every_n_steps=3", "steps_per_call=3"]

# The first last.ckpt (step 3, mid-epoch), just renamed into place: the point each stop below comes at.
FIRST_CHECKPOINT = ("checkpoint_written", 1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_mnist):
    """The run uninterrupted."""
    return trained(*EXACT, data=tiny_mnist, out=tmp_path_factory.mktemp("reference"))


def assert_same_run(run, reference):
    ours, theirs = metrics(run), metrics(reference)
    for key in ("test/acc", "test/loss", "val/acc_best", "val/acc", "val/loss", "steps", "epochs"):
        assert ours[key] == theirs[key], key
    ours, theirs = scalars(run), scalars(reference)  # as TensorBoard shows them
    for tag in ("train/loss", "train/acc", "train/lr", "val/acc", "val/loss", "verdict/test_acc"):
        steps = [step for step, _ in ours[tag]]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice"
        assert ours[tag] == theirs[tag], tag  # every logged step, the same value


def test_sigkill_mid_epoch_then_resume_ends_as_the_uninterrupted_run(tmp_path, tiny_mnist, reference):
    stop_at(*FIRST_CHECKPOINT, "SIGKILL", *EXACT, data=tiny_mnist, out=tmp_path)
    run = only((tmp_path / "runs").iterdir())
    assert metrics(run)["status"] == "running"  # killed: nothing could record it
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < saved < metrics(reference)["steps"]

    result = run_train(f"resume={run}", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert only((tmp_path / "runs").iterdir()) == run  # the same folder, the same TensorBoard run
    record = metrics(run)
    assert record["status"] == "completed" and record["attempts"] == 2
    assert record["resumed_from"] == "checkpoints/last.ckpt"  # relative to the run folder
    assert_same_run(run, reference)


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGUSR1"])  # what Slurm sends before a time limit or preemption
def test_stop_signal_saves_the_step_then_resume_ends_as_the_uninterrupted_run(tmp_path, tiny_mnist, reference, stop):
    stopped = stop_at(*FIRST_CHECKPOINT, stop, *EXACT, data=tiny_mnist, out=tmp_path)
    assert stopped.returncode == 128 + getattr(signal, stop), stopped.stderr[-3000:]
    run = only((tmp_path / "runs").iterdir())
    record = metrics(run)
    assert record["status"] == "interrupted" and record["signal"] == stop
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == record["steps"]
    console = stopped.stdout + stopped.stderr
    said = f"interrupted at step {record['steps']} ({stop}); continue with: python -m rnnexp.train resume={run}"
    assert said in console
    assert "Traceback" not in console

    result = run_train(f"resume={run}", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(run, reference)


def test_resuming_a_completed_run_changes_nothing(tmp_path, tiny_mnist, reference):
    run = shutil.copytree(reference, tmp_path / "run")
    before = (run / "metrics.json").read_text()
    result = run_train(f"resume={run}", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{run} is complete (val/acc_best=" in result.stdout + result.stderr
    assert (run / "metrics.json").read_text() == before


def test_same_seed_gives_the_same_run_and_another_seed_does_not(tmp_path, tiny_mnist, reference):
    for seed in (42, 43):
        assert run_train(*EXACT, f"seed={seed}", data=tiny_mnist, out=tmp_path / str(seed)).returncode == 0
    assert_same_run(only((tmp_path / "42" / "runs").iterdir()), reference)
    other = only((tmp_path / "43" / "runs").iterdir())
    assert scalars(other)["train/loss"] != scalars(reference)["train/loss"]
    environment = metrics(reference)["environment"]  # what makes a run reproducible besides its config
    assert environment["torch"] == torch.__version__ and environment["threads"] == torch.get_num_threads()
    assert environment["device"].startswith("cpu: ") and environment["precision"] == "32-true"
    assert "git" in environment


def test_a_killed_sweep_continues_job_by_job(tmp_path, tiny_mnist):
    sweep_args = ["-m", *EXACT, "model.hidden_size=8,16,12"]
    # killed at the sweep's 14th training step: the first job's 12 (3 epochs of 4) done, the second job's
    # second, right after its last.ckpt of step 6
    stop_at("train_call", 14, "SIGKILL", *sweep_args, data=tiny_mnist, out=tmp_path)
    sweep = only((tmp_path / "multirun").iterdir())
    jobs = ["0_model.hidden_size=8", "1_model.hidden_size=16", "2_model.hidden_size=12"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == jobs[:2]
    first = (sweep / jobs[0] / "metrics.json").read_text()
    assert json.loads(first)["status"] == "completed" and metrics(sweep / jobs[1])["status"] == "running"
    assert torch.load(sweep / jobs[1] / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6

    result = run_train(f"resume={sweep}", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert only((tmp_path / "multirun").iterdir()) == sweep
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == jobs  # the same names, the last one new
    assert (sweep / jobs[0] / "metrics.json").read_text() == first  # completed: skipped
    assert [metrics(sweep / job)["attempts"] for job in jobs] == [1, 2, 1]
    assert all(metrics(sweep / job)["status"] == "completed" for job in jobs)
    # the job first started by resume= is the same setting as its sweep's others: its config does not say how
    configs = [(sweep / job / "config.yaml").read_text() for job in jobs]
    assert [c.replace("hidden_size: 12", "hidden_size: 8") for c in configs[::2]] == [configs[0]] * 2
    assert "resume: null" in configs[2]


@pytest.mark.parametrize(
    "argument, message",
    [
        ("resume={tmp}/nowhere", "resume={tmp}/nowhere: no such folder; give a folder under outputs/runs/"),
        ("resume={tmp}", "resume={tmp}: neither a run (no config.yaml) nor a sweep (no multirun.yaml)"),
    ],
)
def test_resume_of_something_that_is_not_a_run_is_one_line(tmp_path, tiny_mnist, argument, message):
    result = run_train(argument.format(tmp=tmp_path), data=tiny_mnist, out=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message.format(tmp=tmp_path)}"), lines


def test_resume_takes_no_other_overrides(tmp_path, tiny_mnist, reference):
    result = run_train(f"resume={reference}", "trainer.max_epochs=50", data=tiny_mnist, out=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: resume={reference}: takes no other overrides (trainer.max_epochs=50); a run continues with the "
        "config it was started with"
    ]


def test_a_stop_during_an_epochs_last_step_waits_for_its_validation_and_resumes_exactly(tmp_path, tiny_mnist):
    """Stopped before the epoch's validation, a resumed run would start the next epoch and that
    validation would never run; so the stop comes after it (in process, the stop asked for at a
    chosen step rather than by a signal's timing)."""
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir
    from pytorch_lightning.callbacks import Callback

    from rnnexp.checkpoint import LastCheckpoint, Stopped
    from rnnexp.train import build

    class StopAtLastStepOfFirstEpoch(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 0 and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
                next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint)).request_stop("SIGTERM")

    def fit(run_dir, stop=False, resume=None):
        overrides = [*TINY, f"data.root={tiny_mnist}", f"paths.run_dir={run_dir}", "~logger", "steps_per_call=4"]
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, "model.dropout=0.2", "model.layers=2"])
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule, module, trainer = build(cfg)
        if stop:
            trainer.callbacks.append(StopAtLastStepOfFirstEpoch())
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=not resume)
        return module, trainer

    reference, _ = fit(tmp_path / "reference")
    with pytest.raises(Stopped) as stopped:
        fit(tmp_path / "stopped", stop=True)
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert stopped.value.step == 11  # the first epoch's 11 batches, in training steps of 4, 4 and 3
    assert torch.load(last, weights_only=False)["module_state"]["val_acc_best"] is not None  # validated first
    resumed, trainer = fit(tmp_path / "stopped", resume=str(last))
    assert trainer.global_step == 33 and resumed.val_acc_best == reference.val_acc_best
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), reference.state_dict().values()))


def snapshot(folder) -> dict:
    """Every file under a folder: its path inside it, its bytes and its mode."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mode) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_copied_run_folder_resumes_and_evaluates_in_its_new_place_and_leaves_the_original_alone(
    tmp_path, tiny_mnist, reference
):
    (tmp_path / "made").mkdir()
    stopped = stop_at(*FIRST_CHECKPOINT, "SIGTERM", *EXACT, data=tiny_mnist, out=tmp_path / "made")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    original = only((tmp_path / "made" / "runs").iterdir())
    before = snapshot(original)
    copy = shutil.copytree(original, tmp_path / "elsewhere" / "copy")

    result = run_train(f"resume={copy}", data=tiny_mnist, out=tmp_path / "made")
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(original) == before  # byte for byte: nothing written into it
    assert_same_run(copy, reference)
    assert not (copy / "config.yaml").read_text().count(str(original))  # nothing in it names where it was made
    assert metrics(copy)["best_checkpoint"] == metrics(reference)["best_checkpoint"]  # checkpoints/epoch...

    moved = shutil.move(copy, tmp_path / "moved")  # a completed run, moved: evaluated where it is now
    evaluation = cli("rnnexp.evaluate", f"ckpt_path={moved}")
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert (moved / "evaluation" / "evaluation.json").is_file() and not copy.exists()
    assert snapshot(original) == before


def test_checkpoints_are_readable_by_others_as_the_runs_other_files_are(reference):
    modes = {p.name: p.stat().st_mode & 0o777 for p in reference.rglob("*") if p.is_file()}
    assert modes["last.ckpt"] == modes["metrics.json"] == 0o644, modes
    assert {modes[p.name] for p in (reference / "checkpoints").glob("epoch*.ckpt")} == {0o644}


def test_resuming_from_a_last_checkpoint_of_another_model_is_one_line(tmp_path, tiny_mnist, reference):
    run = shutil.copytree(reference, tmp_path / "run")
    (run / "metrics.json").write_text(json.dumps({**metrics(run), "status": "interrupted"}))
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("hidden_size: 16", "hidden_size: 8"))  # edited by hand
    result = run_train(f"resume={run}", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"error: resume={run}: last.ckpt holds another model than the run's config.yaml (model.hidden_size=16 there, "
        "8 here); restore the run's own config.yaml and last.ckpt, or start a new run"
    ]
    assert metrics(run)["status"] == "failed" and metrics(run)["reason"] == "checkpoint"
