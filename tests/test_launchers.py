"""Sweeps under other launchers: jobs in parallel on one machine (joblib) with the cores divided among
them, and jobs as submitit runs them on Slurm (here its local executor, the same code path), which
survive a time limit or a preemption by being requeued and continuing from last.ckpt."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY, record, run_train, scalars

from rnnexp.run import RunFailed, available_cores


def only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


@pytest.mark.skipif(available_cores() < 2, reason="threads=2 is refused where a job may use fewer cores")
def test_joblib_runs_jobs_in_parallel_with_the_cores_divided_among_them(tmp_path, tiny_mnist):
    # threads=null: the cores divided among the 2 jobs at once; an explicit number wins over that
    # (and over the 1 thread joblib's workers are limited to on 2 cores)
    result = run_train("-m", "hydra/launcher=parallel", "threads=null,2", *TINY, "trainer.max_epochs=1",
                       data=tiny_mnist, out=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    sweep = only((tmp_path / "multirun").iterdir())
    divided, explicit = record(sweep / "0_threads=null"), record(sweep / "1_threads=2")
    assert divided["status"] == explicit["status"] == "completed"
    assert divided["environment"]["threads"] == max(1, available_cores() // 2)
    assert explicit["environment"]["threads"] == 2
    assert divided["pid"] != explicit["pid"]  # each in a worker process of its own


def wait_for_checkpoint(job, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not (job / "checkpoints" / "last.ckpt").exists() or not (job / "metrics.json").exists():
        assert proc.poll() is None, "the sweep ended before its job could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_submitit_job_stopped_before_its_time_limit_is_requeued_and_ends_as_if_uninterrupted(tmp_path, tiny_mnist):
    # Two identical jobs (seed=7,7): the first is sent submitit's SIGUSR2, as Slurm would before its
    # time limit; the second runs uninterrupted and is the reference.
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    args = ["-m", "hydra/launcher=submitit_local", *TINY, "trainer.max_epochs=25", "callbacks.last.every_n_steps=3",
            "threads=1", "seed=7,7"]  # fmt: skip
    with open(tmp_path / "console.log", "w") as console:
        proc = subprocess.Popen([sys.executable, "-m", "rnnexp.train", *args], cwd=ROOT, env=env, stdout=console,
                                stderr=subprocess.STDOUT)  # fmt: skip
        try:
            while not list(tmp_path.glob("multirun/*/0_seed=7")):
                assert proc.poll() is None
                time.sleep(0.02)
            job = only(tmp_path.glob("multirun/*/0_seed=7"))
            wait_for_checkpoint(job, proc)
            os.kill(record(job)["pid"], signal.SIGUSR2)
            assert proc.wait(timeout=240) == 0, (tmp_path / "console.log").read_text()[-3000:]
        finally:
            proc.kill()
    requeued, reference = record(job), record(job.parent / "1_seed=7")
    assert reference["status"] == requeued["status"] == "completed"
    assert requeued["attempts"] == 2 and requeued["resumed_from"].endswith("last.ckpt")
    assert requeued["scheduler_job"] != reference["scheduler_job"]
    log = "\n".join(p.read_text() for p in job.parent.glob(".submitit/*/*_log.out"))
    assert "Caught signal SIGUSR2" in log and f"Requeued job {requeued['scheduler_job']}" in log
    for key in ("test/acc", "test/loss", "val/acc_best", "val/acc", "val/loss", "steps"):
        assert requeued[key] == reference[key], key
    ours, theirs = scalars(job), scalars(job.parent / "1_seed=7")
    for tag in ("train/loss", "val/acc"):
        assert ours[tag] == theirs[tag], tag  # every logged step once, with the same value


@pytest.fixture
def submitit_job(monkeypatch):
    """`as_job(id)`: this process as submitit's local job `id` (the in_process fixture restores the
    environment afterwards)."""

    def as_job(job_id: str):
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
        monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", job_id)

    return as_job


def test_a_requeue_finds_its_run_and_any_other_run_is_refused_the_folder(tmp_path, tiny_mnist, in_process,
                                                                          submitit_job):  # fmt: skip
    run_dir = tmp_path / "run"
    quick = [*TINY, "trainer.max_epochs=1", f"data.root={tiny_mnist}"]
    submitit_job("123")
    first = in_process(*quick, run_dir=run_dir, multirun=True)
    assert record(run_dir)["scheduler_job"] == "123"
    before = (run_dir / "metrics.json").read_text()
    assert in_process(*quick, run_dir=run_dir, multirun=True) == first  # requeued after it completed
    assert (run_dir / "metrics.json").read_text() == before
    submitit_job("456")
    with pytest.raises(RunFailed, match="already holds a run"):  # another job's run: not its folder
        in_process(*quick, run_dir=run_dir, multirun=True)
    assert (run_dir / "metrics.json").read_text() == before
