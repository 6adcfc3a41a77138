"""The Optuna search (`-m hparams_search=optuna`): failing trials, a continued study, pruning."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import run_train

# tiny trials: one epoch of a handful of steps, no test
SEARCH = [
    "-m",
    "hparams_search=optuna",
    "data.val_size=50",
    "data.eval_batch_size=64",
    "data.batch_size=64",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=2",
    "hydra.sweeper.params=null",  # each test gives its own search space on the command line
]


def study(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="rnnexp", storage=f"sqlite:///{out / 'optuna.db'}")


def sweeps(out: Path) -> list[Path]:
    return sorted((out / "multirun").iterdir())


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_a_search_counts_its_failed_trials_and_reports_the_best_of_the_others(tmp_path, tiny_mnist):
    proc = run_train(
        *SEARCH,
        "hydra.sweeper.n_trials=4",
        "model.hidden_size=choice(0,8)",  # 0: refused by check() in the job
        "optimizer.lr=tag(log, interval(0.01, 0.05))",  # Optuna's syntax, which the grid's check_sweep cannot split
        data=tiny_mnist,
        out=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = sweeps(tmp_path)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["n_trials"] == 4 and results["failed"] >= 1 and results["completed"] >= 1
    assert results["completed"] + results["failed"] == 4
    failure = results["failures"][0]
    assert failure["reason"] == "config" and "model.hidden_size=0" in failure["error"]
    assert metrics(Path(failure["run_dir"]))["status"] == "failed"
    assert results["best_params"]["model.hidden_size"] == 8
    assert f"Best: trial {results['best_trial']}" in proc.stdout  # Hydra logs to stdout
    states = [t.state for t in study(tmp_path).trials]
    assert states.count(optuna.trial.TrialState.FAIL) == results["failed"]
    assert all(p.name.startswith(f"{n}_") for n, p in enumerate(sorted(sweep.glob("[0-9]*"))))


def test_a_continued_study_runs_only_the_missing_trials_with_new_parameters(tmp_path, tiny_mnist):
    # every trial is refused before it trains: quick, and a search where nothing completes ends cleanly
    space = ["model.hidden_size=8", "model.layers=choice(0)", "optimizer.lr=tag(log, interval(0.0001, 0.1))"]
    first = run_train(*SEARCH, "hydra.sweeper.n_trials=2", *space, data=tiny_mnist, out=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_train(*SEARCH, "hydra.sweeper.n_trials=3", *space, data=tiny_mnist, out=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 trials so far, 1 to run for n_trials=3" in second.stdout
    trials = study(tmp_path).trials
    assert len(trials) == 3
    assert len({t.params["optimizer.lr"] for t in trials}) == 3  # the sampler is not restarted from the same seed
    one, two = sweeps(tmp_path)
    assert [p.name.split("_")[0] for p in sorted(one.glob("[0-9]*"))] == ["0", "1"]
    assert [p.name.split("_")[0] for p in two.glob("[0-9]*")] == ["2"]  # the first sweep's folders untouched
    assert yaml.safe_load((two / "optimization_results.yaml").read_text())["failed"] == 3
    assert "no trial completed" in second.stdout


def test_a_trial_that_falls_behind_is_pruned(tmp_path, tiny_mnist):
    prune = ["hydra.sweeper.pruner.n_startup_trials=1", "trainer.max_epochs=3", "model.hidden_size=16"]
    good = run_train(*SEARCH, *prune, "hydra.sweeper.n_trials=1", "optimizer.lr=0.03", data=tiny_mnist, out=tmp_path)
    assert good.returncode == 0, good.stderr[-3000:]
    bad = run_train(*SEARCH, *prune, "hydra.sweeper.n_trials=2", "optimizer.lr=1e-7", data=tiny_mnist, out=tmp_path)
    assert bad.returncode == 0, bad.stderr[-3000:]
    first, second = study(tmp_path).trials
    assert first.state == optuna.trial.TrialState.COMPLETE and len(first.intermediate_values) == 3
    assert second.state == optuna.trial.TrialState.PRUNED
    (run_dir,) = sweeps(tmp_path)[1].glob("1_*")
    record = metrics(run_dir)
    assert record["status"] == "pruned" and record["epochs"] < 3 and "test/acc" not in record
    assert "1 pruned" in bad.stdout


def test_a_trial_left_running_by_a_killed_search_is_failed_when_the_study_continues(tmp_path, tiny_mnist):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    killed = optuna.create_study(study_name="rnnexp", storage=storage, direction="maximize")
    run_dir = tmp_path / "multirun" / "earlier" / "0_model.layers=2"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "running", "host": "elsewhere", "pid": 1}))
    killed.ask().set_user_attr("run_dir", str(run_dir))  # its sweep killed before it was told
    proc = run_train(*SEARCH, "hydra.sweeper.n_trials=1", "model.layers=choice(0)", data=tiny_mnist, out=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 trials so far, 0 to run" in proc.stdout and "trial 0 failed (killed)" in proc.stdout
    (trial,) = study(tmp_path).trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["reason"] == "killed"
    assert metrics(run_dir)["status"] == "failed" and metrics(run_dir)["reason"] == "killed"


@pytest.mark.parametrize(
    "storage, line",
    [
        ("foo://x", "hydra.sweeper.storage=foo://x: not a database URL SQLAlchemy can open (Can't load plugin: "),
        (
            "postgresql://user:secret@localhost/db",  # the password is not shown
            "hydra.sweeper.storage=postgresql://user:***@localhost/db: its database driver ({pg}) is not "
            "installed; pip install {pg_package}, or keep the study in SQLite",
        ),
        ("mysql://user@localhost/db", "hydra.sweeper.storage=mysql://user@localhost/db: its database driver (MySQLdb)"),
        ("sqlite:///{garbage}", "hydra.sweeper.storage=sqlite:///{garbage}: {garbage} is not an SQLite database ("),
        (
            "sqlite:///{garbage}/sub/optuna.db",
            "hydra.sweeper.storage=sqlite:///{garbage}/sub/optuna.db: cannot create its folder {garbage}/sub (",
        ),
    ],
)
def test_a_study_storage_that_cannot_be_opened_is_named_in_one_line(tmp_path, tiny_mnist, storage, line):
    from sqlalchemy.engine import make_url

    pg = make_url("postgresql://").get_dialect().driver  # SQLAlchemy 2.0: psycopg2, 2.1: psycopg (3)
    driver = {"postgresql": pg, "mysql": "MySQLdb"}.get(storage.split(":", 1)[0])
    if driver and importlib.util.find_spec(driver):
        pytest.skip(f"{driver} is installed here")
    garbage = tmp_path / "optuna.db"
    garbage.write_bytes(bytes(range(256)) * 8)  # a file of something else where the study should be
    pg_package = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary"}[pg]
    storage, line = storage.format(garbage=garbage), line.format(garbage=garbage, pg=pg, pg_package=pg_package)
    proc = run_train(*SEARCH, f"hydra.sweeper.storage={storage}", data=tiny_mnist, out=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]]  # one line
    assert proc.stderr.strip().startswith(f"error: {line}"), proc.stderr
    assert "secret" not in proc.stdout + proc.stderr
    assert not (tmp_path / "multirun").exists()  # refused before a sweep folder or a trial
    assert garbage.read_bytes() == bytes(range(256)) * 8


def test_a_trial_reporting_to_a_study_on_a_full_disk_fails_as_output(tmp_path):
    import sqlite3

    import sqlalchemy.exc

    from rnnexp.errors import OutputError
    from rnnexp.study import storage_errors

    database = sqlite3.connect(tmp_path / "optuna.db")
    database.execute("PRAGMA max_page_count = 2")  # SQLite's own way to run out of room: SQLITE_FULL, as a full disk
    database.execute("CREATE TABLE t (x)")
    with pytest.raises(sqlite3.OperationalError) as full:
        database.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(OutputError) as err, storage_errors(storage):  # as optuna wraps a failed commit
        try:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, full.value)
        except sqlalchemy.exc.OperationalError as commit:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from commit
    assert str(err.value) == (
        f"hydra.sweeper.storage={storage}: cannot write the study's database (database or disk is full); free space "
        "on its disk"
    )
