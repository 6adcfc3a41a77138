"""Sweeps under other launchers: jobs in parallel on one machine (joblib) with the cores divided among
them, whose workers end with the sweep's process, and jobs as submitit runs them on Slurm (here its
local executor, the same code path), which survive a time limit or a preemption by being requeued and
continuing from last.ckpt."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
                       data=tiny_mnist, out=tmp_path, subprocess=True)  # fmt: skip
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


def children(pid):
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:  # after the name: state, ppid
                found.append(int(stat.parent.name))
    return found


def ended(pid):
    """No such process, or a zombie its new parent has yet to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_killing_a_parallel_sweep_stops_its_workers_jobs_saved_and_resume_completes_the_sweep(tmp_path, tiny_mnist):
    # Three jobs on two workers: the sweep's process is SIGKILLed while the first two train and the
    # third waits. The workers must not outlive it: their jobs stop as on SIGTERM, saved, and they exit.
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    # 10 epochs of 11 steps: the two workers start together, so each is far from its end at the other's first save
    args = ["-m", "hydra/launcher=parallel", *TINY, "trainer.max_epochs=10", "callbacks.last.every_n_steps=5",
            "threads=1", "seed=1,2,3"]  # fmt: skip
    workers = []
    with open(tmp_path / "console.log", "w") as console:
        proc = subprocess.Popen([sys.executable, "-m", "rnnexp.train", *args], cwd=ROOT, env=env, stdout=console,
                                stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while len(running := list(tmp_path.glob("multirun/*/[01]_seed=*"))) < 2:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            for job in running:
                wait_for_checkpoint(job, proc)  # both mid-training: a step saved, most epochs to go
            workers = children(proc.pid)
            assert {record(job)["pid"] for job in running} <= set(workers)
            proc.kill()
            proc.wait()
            deadline = time.monotonic() + 90  # well within the workers' own deadline (120 s): the jobs' stop ended them
            while not all(ended(pid) for pid in workers):
                assert time.monotonic() < deadline, f"still running: {[p for p in workers if not ended(p)]}"
                time.sleep(0.1)
        finally:
            proc.kill()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    sweep = running[0].parent
    for job in running:
        stopped = record(job)
        assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGTERM", stopped
        assert 0 < stopped["steps"] < 110
    waiting = sweep / "2_seed=3"
    assert not (waiting / "metrics.json").exists()  # never started
    result = run_train(f"resume={sweep}", data=tiny_mnist, out=tmp_path, subprocess=True)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = [record(job) for job in running]
    assert all(r["status"] == "completed" and r["attempts"] == 2 and r["steps"] == 110 for r in resumed), resumed
    assert all(r["resumed_from"].endswith("last.ckpt") for r in resumed)
    fresh = record(waiting)
    assert fresh["status"] == "completed" and fresh["attempts"] == 1
    # three jobs, two workers: one ran two, its watch of the (living) parent did not end it in between
    assert len({r["pid"] for r in [*resumed, fresh]}) == 2


# A worker whose job ignores the stop: it records itself `running`, takes SIGTERM as a note in a file
# and goes on forever; its watch of the parent has a deadline of 2 s.
STUBBORN_WORKER = """
import multiprocessing, pathlib, signal, sys, time
from rnnexp.parent_watch import end_with_parent
from rnnexp.record import RunRecord

def job(run_dir):
    end_with_parent(run_dir, deadline_s=2)
    signal.signal(signal.SIGTERM, lambda *_: (run_dir / "sigterm").touch())
    RunRecord(run_dir).start()
    while True:
        time.sleep(1)

multiprocessing.get_context("fork").Process(target=job, args=(pathlib.Path(sys.argv[1]),)).start()
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker in /proc")
def test_a_worker_whose_job_does_not_stop_still_ends_by_its_deadline_once_its_parent_is_gone(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN_WORKER, str(tmp_path)], cwd=ROOT)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "metrics.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        worker = record(tmp_path)["pid"]
        assert worker in children(proc.pid)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while not ended(worker):
            assert time.monotonic() < deadline, "the worker outlived its deadline"
            time.sleep(0.1)
    finally:
        proc.kill()
        if worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
    assert (tmp_path / "sigterm").exists()  # the job was asked to stop first
    assert record(tmp_path)["status"] == "running"  # and did not: the deadline ended the worker


def test_a_submitit_job_stopped_before_its_time_limit_is_requeued_and_ends_as_if_uninterrupted(tmp_path, tiny_mnist):
    # Two identical jobs (seed=7,7): the first is sent submitit's SIGUSR2, as Slurm would before its
    # time limit; the second runs uninterrupted and is the reference.
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    args = ["-m", "hydra/launcher=submitit_local", *TINY, "trainer.max_epochs=6", "callbacks.last.every_n_steps=3",
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
    assert "submitit requeues the job, which continues from last.ckpt by itself" in log  # not: resume by hand
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
