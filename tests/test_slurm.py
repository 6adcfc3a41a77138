"""Sweeps on a real Slurm cluster (`hydra/launcher=slurm`): the README's command on a CPU partition,
a job that can never start, a job stopped by its time limit and requeued, a submitter stopped and the
sweep resumed. `.ci/slurm-up` starts a one-node cluster on this machine (CI does, before the tests);
without one these tests are skipped, except with CI=true, where they fail."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY, only, record, run_train, scalars, terminal

pytestmark = pytest.mark.slurm


def cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout.split()
    return any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states)


@pytest.fixture(scope="module", autouse=True)
def slurm():
    if not cluster_up():
        message = "no Slurm cluster answers (sinfo); start one on this machine with .ci/slurm-up"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def queued(array: str) -> list[str]:
    return subprocess.run(["squeue", "-h", "-j", array, "-o", "%i"], capture_output=True, text=True).stdout.split()


def wait(condition, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"the sweep ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


def test_the_readme_command_runs_on_a_cpu_partition_and_says_how_its_jobs_are(tmp_path, tiny_mnist):
    result = run_train("-m", "hydra/launcher=slurm", "model=rnn,gru", *TINY, "trainer.max_epochs=1",
                       data=tiny_mnist, out=tmp_path, timeout=300, subprocess=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((only((tmp_path / "multirun").iterdir())).glob("*_model=*"))
    assert [j.name for j in jobs] == ["0_model=rnn", "1_model=gru"]
    for job in jobs:
        assert record(job)["status"] == "completed" and record(job)["scheduler_job"]
        assert f"{job.name}: running" in result.stdout and f"{job.name}: completed" in result.stdout
    assert "jobs: 2 completed" in result.stdout


def test_a_job_that_can_never_start_ends_the_sweep_in_one_line(tmp_path, tiny_mnist):
    too_many = 2 * os.cpu_count()  # more than the node has: Slurm keeps it pending (PartitionConfig) for ever
    result = run_train("-m", "hydra/launcher=slurm", "model=rnn,gru", *TINY, f"hydra.launcher.cpus_per_task={too_many}",
                       data=tiny_mnist, out=tmp_path, timeout=120, subprocess=True)  # fmt: skip
    assert result.returncode == 1
    line = only(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert line.startswith("error: Slurm job ") and "can never start (PartitionConfig" in line, result.stderr[-2000:]
    assert f"cpus_per_task={too_many}" in line and "change hydra.launcher.cpus_per_task" in line
    assert "Traceback" not in result.stderr
    array = line.split("Slurm job ", 1)[1].split("_")[0]
    wait(lambda: not queued(array), 30, "cancelled array")


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["hydra.launcher.partition=nosuch"], "hydra.launcher.partition=nosuch: give a partition sinfo lists"),
        (["trainer=gpu"], "hydra.launcher.gpus_per_node=1 (trainer.accelerator=gpu): the partition has no GPUs"),
    ],
)
def test_an_array_sbatch_refuses_is_one_line_naming_the_setting(tmp_path, tiny_mnist, overrides, says):
    if "gpu" in subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True).stdout:
        pytest.skip("this cluster has GPUs")
    result = run_train(
        "-m", "hydra/launcher=slurm", "model=rnn", *TINY, *overrides, data=tiny_mnist, out=tmp_path, subprocess=True
    )
    assert result.returncode == 1
    line = only(line for line in result.stderr.splitlines() if line.strip())
    assert line.startswith("error: sbatch refused the sweep's job array (") and says in line, result.stderr[-2000:]


# Long enough that Slurm's signal, due signal_delay_s (60) before the 2-minute limit and measured 30 to
# 47 s after a job's start, comes while it trains: 300 epochs took 60 s at threads=1 in process (2-core AMD
# EPYC, commit 035368b), after the job's imports (about 7 s) and well past the signal's latest.
LONG = [*TINY, "trainer.max_epochs=300", "callbacks.last.every_n_steps=3", "threads=1", "seed=7"]


def test_a_job_stopped_by_its_time_limit_is_requeued_and_ends_as_the_uninterrupted_run(tmp_path, tiny_mnist):
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path / "slurm")}
    limit = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60", "hydra.launcher.cpus_per_task=1"]
    command = [sys.executable, "-m", "rnnexp.train", "-m", "hydra/launcher=slurm", *LONG, *limit]
    sweep = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        reference = run_train(
            *LONG, data=tiny_mnist, out=tmp_path / "local", timeout=600, subprocess=True
        )  # meanwhile, on this host
        assert reference.returncode == 0, reference.stderr[-3000:]
        console, _ = sweep.communicate(timeout=900)
        assert sweep.returncode == 0, console[-3000:]
    finally:
        sweep.kill()
    job = only((tmp_path / "slurm" / "multirun").glob("*/0_*"))
    ref = only((tmp_path / "local" / "runs").iterdir())
    requeued, uninterrupted = record(job), record(ref)
    assert requeued["status"] == "completed" and requeued["attempts"] >= 2, requeued  # stopped at least once
    log = "\n".join(p.read_text() for p in job.parent.glob(".submitit/*/*_log.out"))
    assert "Caught signal SIGUSR2" in log
    for key in ("test/acc", "test/loss", "val/acc_best", "val/acc", "val/loss", "steps"):
        assert requeued[key] == uninterrupted[key], key
    ours, theirs = scalars(job), scalars(ref)
    for tag in ("train/loss", "val/acc"):
        assert ours[tag] == theirs[tag], tag  # every logged step once, with the same value


def test_a_stopped_submitter_then_resume_completes_the_sweep_and_submits_no_completed_job_again(tmp_path, tiny_mnist):
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    # the second job is queued or starting when the submitter is stopped: it starts once the first has ended
    # (array_parallelism=1), and the submitter is stopped as soon as the first's record says completed
    command = [sys.executable, "-m", "rnnexp.train", "-m", "hydra/launcher=slurm", *TINY, "trainer.max_epochs=2,3",
               "hydra.launcher.array_parallelism=1"]  # fmt: skip
    # Ctrl-C is the submitter's to handle, as for a command typed in a terminal, even where the tests run in the
    # background of a script (which starts them with SIGINT ignored, and a child inherits that)
    submitter = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=terminal())  # fmt: skip
    try:
        wait(lambda: list(tmp_path.glob("multirun/*/0_trainer.max_epochs=2/metrics.json")), 180, "first job", submitter)
        first = only(tmp_path.glob("multirun/*/0_trainer.max_epochs=2"))
        wait(lambda: record(first).get("status") == "completed", 180, "first job completed", submitter)
        submitter.send_signal(signal.SIGINT)  # Ctrl-C: the second job is still queued or running
        _, stderr = submitter.communicate(timeout=60)
    finally:
        submitter.kill()
    assert submitter.returncode == 130
    line = only(line for line in stderr.splitlines() if line.startswith("the submitter was stopped"))
    # the first job's process may still be ending in Slurm when its record says completed
    assert re.search(r"[12] of the sweep's 2 jobs go on in Slurm", line) and "Traceback" not in stderr, stderr[-2000:]
    array = line.split("squeue -j ", 1)[1].split(";")[0]
    subprocess.run(["scancel", array], check=True)  # the rest of the sweep, gone with it
    wait(lambda: not queued(array), 60, "cancelled job")
    completed = (first / "metrics.json").read_bytes()

    result = run_train(f"resume={first.parent}", data=tiny_mnist, out=tmp_path, timeout=300, subprocess=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 of 2 jobs completed before: not submitted again" in result.stdout
    assert (first / "metrics.json").read_bytes() == completed
    second = record(first.parent / "1_trainer.max_epochs=3")
    assert second["status"] == "completed" and second["scheduler_job"].split("_")[0] != array


def test_a_two_worker_search_on_the_journal_store_ends_with_exactly_n_trials(tmp_path, tiny_mnist):
    import optuna

    journal = tmp_path / "study.log"  # Optuna's journal file: the store for a file system the nodes share
    result = run_train("-m", "hparams_search=optuna", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                       "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage=journal:///{journal}",
                       "hydra.sweeper.params=null", *TINY, "trainer.max_epochs=1", "model.hidden_size=choice(8,16)",
                       data=tiny_mnist, out=tmp_path, timeout=600, subprocess=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="rnnexp", storage=storage).get_trials()
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    jobs = sorted(only((tmp_path / "multirun").iterdir()).glob("[0-9]_*"))
    assert len(jobs) == 3 and all(record(j)["scheduler_job"] for j in jobs)  # each trial a Slurm job
