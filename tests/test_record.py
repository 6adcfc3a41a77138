"""Whether a run is alive, on any host: its heartbeat file, refreshed while it runs and stopped at its end,
and what resume=, a sweep's summary and a search's cleanup of stale trials make of it."""

import json
import os
import shutil
import socket
import threading
import time
from types import SimpleNamespace

import optuna
import pytest
import yaml
from conftest import TINY, run_train, trained
from conftest import record as metrics

from hydra_plugins.rnnexp_sweepers._optuna_search import abandon_stale
from rnnexp import record
from rnnexp.errors import ConfigError
from rnnexp.record import HEARTBEAT, Heartbeat, process_alive
from rnnexp.sweep_summary import summarize

ELSEWHERE = "node-elsewhere"  # another host of the cluster, sharing the file system
DEAD_PID = 2**22 + 12345  # above Linux's largest pid: no process has it


def running(folder, host=ELSEWHERE, pid=1, beat_age=None) -> dict:
    """A run folder whose record says `running` on `host` as `pid`; a heartbeat `beat_age` seconds
    old, or none (a record written before heartbeats)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {**(metrics(folder) if (folder / "metrics.json").exists() else {}), "status": "running"}
    data.update(host=host, pid=pid)
    (folder / "metrics.json").write_text(json.dumps(data))
    if beat_age is not None:
        (folder / HEARTBEAT).touch()
        beat = os.stat(folder / HEARTBEAT).st_mtime - beat_age
        os.utime(folder / HEARTBEAT, (beat, beat))
    return data


def stale() -> float:
    """An age at which a heartbeat says its run is gone."""
    return record.MISSED_BEATS * record.HEARTBEAT_S + 60


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.01)


# --- alive ---------------------------------------------------------------------------------------


def test_a_run_on_another_host_is_alive_while_its_heartbeat_is_fresh(tmp_path):
    assert process_alive(running(tmp_path, beat_age=0), tmp_path)
    assert process_alive(running(tmp_path, beat_age=record.HEARTBEAT_S + 5), tmp_path)  # a beat late: still alive


def test_a_run_on_another_host_whose_heartbeat_is_stale_or_missing_is_dead(tmp_path):
    assert not process_alive(running(tmp_path, beat_age=stale()), tmp_path)
    (tmp_path / HEARTBEAT).unlink()
    assert not process_alive(running(tmp_path), tmp_path)  # recorded before heartbeats: as before, dead
    assert not process_alive(running(tmp_path, beat_age=0))  # no folder given: the pid's word only


def test_on_its_own_host_the_pid_decides_at_once(tmp_path):
    here = socket.gethostname()
    assert not process_alive(running(tmp_path, host=here, pid=DEAD_PID, beat_age=0), tmp_path)  # killed just now
    assert process_alive(running(tmp_path, host=here, pid=os.getppid(), beat_age=stale()), tmp_path)
    (tmp_path / HEARTBEAT).unlink()
    assert process_alive(running(tmp_path, host=here, pid=os.getppid()), tmp_path)  # recorded before heartbeats


def test_the_heartbeat_is_compared_with_the_file_systems_clock_not_this_hosts(tmp_path, monkeypatch):
    running(tmp_path, beat_age=0)
    monkeypatch.setattr(record, "time", SimpleNamespace(time=lambda: 10**10))  # this host's clock far ahead
    assert process_alive(metrics(tmp_path), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [HEARTBEAT, "metrics.json"]  # the probe is gone


# --- the heartbeat of a run --------------------------------------------------------------------------


def heartbeats() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rnnexp-heartbeat"]


@pytest.mark.parametrize("ending", ["completed", "failed", "interrupted"])
def test_a_run_refreshes_its_heartbeat_while_it_runs_and_stops_it_at_its_end(
    tmp_path, tiny_mnist, in_process, monkeypatch, ending
):
    monkeypatch.setattr(record, "HEARTBEAT_S", 0.05)
    run_dir = tmp_path / "run"
    seen = {}

    def task(cfg, job):
        beat = run_dir / HEARTBEAT
        assert beat.exists() and len(heartbeats()) == 1
        os.utime(beat, (1, 1))  # long ago: the thread must bring it back to now
        wait_until(lambda: os.stat(beat).st_mtime > 1, "the heartbeat refreshed")
        seen["alive elsewhere"] = process_alive({**metrics(run_dir), "host": ELSEWHERE}, run_dir)
        if ending == "failed":
            raise ConfigError("a failure of the run's own")
        if ending == "interrupted":
            raise KeyboardInterrupt
        return {"val/acc_best": 0.5}

    expected = {"completed": None, "failed": SystemExit, "interrupted": KeyboardInterrupt}[ending]
    if expected is None:
        in_process(*TINY, f"data.root={tiny_mnist}", run_dir=run_dir, task=task)
    else:
        with pytest.raises(expected):
            in_process(*TINY, f"data.root={tiny_mnist}", run_dir=run_dir, task=task)
    assert seen["alive elsewhere"]
    assert metrics(run_dir)["status"] == ending
    assert not (run_dir / HEARTBEAT).exists() and not heartbeats()
    assert not process_alive({**metrics(run_dir), "host": ELSEWHERE}, run_dir)


def test_a_stopped_heartbeat_is_not_brought_back_by_a_late_beat(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "HEARTBEAT_S", 0.001)
    beat = Heartbeat(tmp_path / HEARTBEAT)
    beat.start()
    beat.stop()
    assert not beat.thread.is_alive() and not (tmp_path / HEARTBEAT).exists()


# --- its users -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_mnist):
    """A short run, complete: copies of it are made to look still running."""
    return trained(*TINY, "trainer.max_epochs=1", data=tiny_mnist, out=tmp_path_factory.mktemp("finished"))


def test_resume_of_a_run_alive_on_another_host_is_refused_in_one_line(tmp_path, tiny_mnist, finished):
    run_dir = shutil.copytree(finished, tmp_path / "run")
    running(run_dir)
    beat = Heartbeat(run_dir / HEARTBEAT)  # as the run on the other host keeps it
    beat.start()
    try:
        result = run_train(f"resume={run_dir}", data=tiny_mnist, out=tmp_path)
    finally:
        beat.stop()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: resume={run_dir}: the run is still running (pid 1 on {ELSEWHERE}); stop it first"
    ]
    assert metrics(run_dir)["status"] == "running" and metrics(run_dir)["host"] == ELSEWHERE  # left alone


def test_resume_of_a_run_whose_heartbeat_went_stale_on_another_host_continues_it(tmp_path, tiny_mnist, finished):
    run_dir = shutil.copytree(finished, tmp_path / "run")
    running(run_dir, beat_age=stale())  # its node died
    result = run_train(f"resume={run_dir}", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    done = metrics(run_dir)
    assert done["status"] == "completed" and done["attempts"] == 2 and done["host"] == socket.gethostname()
    assert not (run_dir / HEARTBEAT).exists()


def test_a_sweep_summary_tells_a_run_alive_elsewhere_from_a_killed_one(tmp_path):
    running(tmp_path / "0_a", beat_age=0)
    running(tmp_path / "1_b", beat_age=stale())
    running(tmp_path / "2_c", host=socket.gethostname(), pid=DEAD_PID, beat_age=0)
    summary = summarize(tmp_path, "val/acc_best")
    assert summary["running"] == 1 and summary["killed"] == 2
    assert [f["job"] for f in summary["failures"]] == ["1_b", "2_c"]


def test_a_sweep_summary_writes_the_best_at_the_precision_it_carries(tmp_path, caplog):
    for name, acc in (("0_a", 0.9842000007629395), ("1_b", 0.95)):  # float32's value of 0.9842, as recorded
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"status": "completed", "val/acc_best": acc}))
    caplog.set_level("INFO", logger="rnnexp")
    summarize(tmp_path, "val/acc_best")
    written = (tmp_path / "summary.yaml").read_text()
    assert yaml.safe_load(written)["best"] == {"job": "0_a", "val/acc_best": 0.9842} and "0.98420000" not in written
    assert "Best: 0_a, val/acc_best=0.9842" in caplog.text and "0.98420000" not in caplog.text


def test_a_search_leaves_a_trial_alive_on_another_host_running(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    alive, dead = study.ask(), study.ask()
    for trial, age in ((alive, 0), (dead, stale())):
        run_dir = tmp_path / str(trial.number)
        running(run_dir, beat_age=age)
        trial.set_user_attr("run_dir", str(run_dir))
    abandon_stale(study, storage)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL]
    assert metrics(tmp_path / "0")["status"] == "running" and metrics(tmp_path / "1")["reason"] == "killed"
