"""The Optuna search (`-m hparams_search=optuna`): failing trials, a continued study, pruning."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, only, run_train, terminal

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
    assert proc.stdout.count("Best") == 1  # one line, which optimization_results.yaml agrees with
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


def test_resume_of_a_search_folder_continues_its_study_in_that_folder(tmp_path, tiny_mnist):
    space = ["model.hidden_size=8", "model.layers=choice(0)", "optimizer.lr=tag(log, interval(0.0001, 0.1))"]
    first = run_train(*SEARCH, "hydra.sweeper.n_trials=2", *space, data=tiny_mnist, out=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (folder,) = sweeps(tmp_path)
    again = run_train(f"resume={folder}", "hydra.sweeper.n_trials=3", data=tiny_mnist, out=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 trials so far, 1 to run for n_trials=3" in again.stdout
    assert sweeps(tmp_path) == [folder]  # no second folder: this one shows the whole study
    assert [p.name.split("_")[0] for p in sorted(folder.glob("[0-9]*"))] == ["0", "1", "2"]
    assert yaml.safe_load((folder / "optimization_results.yaml").read_text())["n_trials"] == 3


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


def test_a_killed_trial_continues_once_from_its_last_checkpoint_when_asked(tmp_path, tiny_mnist):
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    args = [*SEARCH, "hydra.sweeper.n_trials=2", "model.hidden_size=choice(8,16)", "trainer.max_epochs=30",
            "callbacks.last.every_n_steps=3", "hydra.sweeper.retry_killed=true"]  # fmt: skip
    search = subprocess.Popen([sys.executable, "-m", "rnnexp.train", *args], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not list(tmp_path.glob("multirun/*/0_*/checkpoints/last.ckpt")):  # trial 0 saved a step
            assert search.poll() is None and time.monotonic() < deadline, "trial 0 never saved a checkpoint"
            time.sleep(0.05)
    finally:
        os.killpg(search.pid, signal.SIGKILL)  # the sweep and its trial, at once (a node gone)
        search.wait()
    run_dir = only(tmp_path.glob("multirun/*/0_*"))
    again = run_train(*args, data=tiny_mnist, out=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial 0 was killed; it continues from" in again.stdout
    record = metrics(run_dir)  # continued in its own folder, not started afresh in a new one
    assert record["status"] == "completed" and record["attempts"] == 2 and record["resumed_from"].endswith("last.ckpt")
    trials = study(tmp_path).trials
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert trials[0].value == record["val/acc_best"]


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
    from rnnexp.storage import storage_errors

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


# --- the sweep grammar as Optuna distributions, each form with the grammar's documented meaning


def space_of(*lines: str):
    from hydra_plugins.rnnexp_sweepers._search_space import parse

    return parse(list(lines))


def drawn(distribution, n: int = 200) -> set:
    """The values a random sampler draws from this distribution."""
    sampled = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return {sampled.ask({"x": distribution}).params["x"] for _ in range(n)}


def test_hydras_range_excludes_its_stop_as_the_grammar_says():
    from optuna.distributions import FloatDistribution, IntDistribution

    space = space_of("a=range(1,4)", "b=range(0,1,0.25)", "c=range(10,0,-3)", "d=range(0,10,3)")
    assert space.distributions["a"] == IntDistribution(1, 3, step=1)
    assert drawn(space.distributions["a"]) == {1, 2, 3}  # range(1,4): 1, 2, 3 only, never 4
    assert space.distributions["b"] == FloatDistribution(0.0, 0.75, step=0.25)
    assert drawn(space.distributions["b"]) == {0.0, 0.25, 0.5, 0.75}
    assert drawn(space.distributions["c"]) == {1, 4, 7, 10}  # a negative step: Hydra's 10, 7, 4, 1
    assert drawn(space.distributions["d"]) == {0, 3, 6, 9}


def test_choice_interval_and_log_tags_become_optunas_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = space_of(
        "model.cell=choice(rnn, lstm, gru)",
        "data.batch_size=32,64",
        "optimizer.lr=tag(log, interval(1e-4, 3e-2))",
        "model.dropout=interval(0.0, 0.5)",
        "model.hidden_size=interval(8, 64)",
        "model.layers=tag(log, interval(1, 8))",
        "+trainer.limit_train_batches=choice(0.1, 0.2)",
        "seed=3",
        "model=gru",
    )
    d = space.distributions
    assert d["model.cell"] == CategoricalDistribution(["rnn", "lstm", "gru"])
    assert d["data.batch_size"] == CategoricalDistribution([32, 64])
    assert d["optimizer.lr"] == FloatDistribution(1e-4, 3e-2, log=True)
    assert d["model.dropout"] == FloatDistribution(0.0, 0.5)
    assert d["model.hidden_size"] == IntDistribution(8, 64)  # both bounds written as integers
    assert d["model.layers"] == IntDistribution(1, 8, log=True)
    assert drawn(d["model.hidden_size"]) <= set(range(8, 65))
    assert space.fixed == {"seed": "seed=3", "model": "model=gru"}  # plain values: every trial, as written
    overrides = space.overrides({"model.cell": "lstm", "optimizer.lr": 0.001, "+trainer.limit_train_batches": 0.1})
    assert overrides[:2] == ["seed=3", "model=gru"]
    assert "model.cell=lstm" in overrides and "optimizer.lr=0.001" in overrides


def test_a_later_override_of_a_key_replaces_the_searched_one():
    space = space_of("model.layers=choice(1, 2)", "optimizer.lr=tag(log, interval(1e-4, 1e-2))", "model.layers=2")
    assert "model.layers" not in space.distributions and space.fixed == {"model.layers": "model.layers=2"}


def test_the_older_search_space_form_is_still_read():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.rnnexp_sweepers._search_space import from_search_space
    from rnnexp.errors import ConfigError

    space = from_search_space(
        {
            "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "model.layers": {"type": "int", "low": 1, "high": 3},
            "model.cell": {"type": "categorical", "choices": ["rnn", "gru"]},
        }
    )
    assert space.distributions == {
        "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "model.layers": IntDistribution(1, 3),
        "model.cell": CategoricalDistribution(["rnn", "gru"]),
    }
    with pytest.raises(ConfigError, match=r"hydra.sweeper.search_space.x: type 'uniform'"):
        from_search_space({"x": {"type": "uniform", "low": 0, "high": 1}})


@pytest.mark.parametrize("value", ["rnn", "a b", "true", "1", "it's", 0.1, 3, True, None, 1e-07])
def test_a_drawn_value_is_read_back_by_hydra_as_the_same_value(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.rnnexp_sweepers._search_space import format_value

    (override,) = OverridesParser.create().parse_overrides([f"key={format_value(value)}"])
    assert override.value() == value and type(override.value()) is type(value)


@pytest.mark.parametrize(
    "line, says",
    [
        ("a=range(3,3)", "a=range(3,3): an empty range"),
        ("a=tag(log, choice(1, 2))", "tag(log, ...) applies to an interval or a range"),
        ("a=tag(log, range(1, 10, 2))", "a range on a log scale needs step 1"),
        ("a=interval(2, 1)", "an interval needs a start below its end"),
        ("a=choice(1", "a=choice(1: not Hydra's override grammar (no viable alternative"),
    ],
)
def test_a_search_space_optuna_cannot_take_is_refused_naming_it(line, says):
    from rnnexp.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(says)):
        space_of(line)


@pytest.mark.parametrize("group, name", [(g, n) for g in ("sampler",) for n in ("tpe", "random", "gp", "cmaes", "qmc")])
def test_each_sampler_option_builds_a_seeded_optuna_sampler(group, name):
    from hydra.core.config_store import ConfigStore
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import hydra_plugins.rnnexp_sweepers.optuna_sweeper  # noqa: F401  (registers the options)

    node = ConfigStore.instance().load(f"hydra/sweeper/{group}/{name}.yaml").node
    sampler = instantiate(OmegaConf.merge(node, {"seed": 7}))
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    assert name != "tpe" or node.multivariate is True
    studied = optuna.create_study(sampler=sampler)
    studied.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 3), n_trials=3)
    assert len(studied.trials) == 3


@pytest.mark.parametrize("name", ["median", "successive_halving", "hyperband", "none"])
def test_each_pruner_option_builds_an_optuna_pruner(name):
    from hydra.core.config_store import ConfigStore
    from hydra.utils import instantiate

    import hydra_plugins.rnnexp_sweepers.optuna_sweeper  # noqa: F401

    node = ConfigStore.instance().load(f"hydra/sweeper/pruner/{name}.yaml").node
    assert isinstance(instantiate(node), optuna.pruners.BasePruner)


def test_the_sweeper_and_the_job_use_no_private_optuna_or_hydra_attribute():
    root = Path(__file__).parents[1]
    files = [root / "rnnexp/study.py", root / "rnnexp/storage.py", *(root / "hydra_plugins").rglob("*.py")]
    sources = {p: p.read_text() for p in files}
    private = re.compile(r"\._(storage|study_id|trial_id|impl)\b|hydra_optuna_sweeper|optuna\.trial\.Trial\(")
    assert {str(p): private.findall(s) for p, s in sources.items() if private.search(s)} == {}
    assert not [p for p, s in sources.items() if "_return_value" in s]  # Hydra's, read in rnnexp/compat/hydra.py


# --- stores


def test_a_study_in_a_journal_file_is_searched_and_continued(tmp_path, tiny_mnist):
    journal = tmp_path / "shared" / "study.log"
    space = [f"hydra.sweeper.storage=journal:///{journal}", "model.hidden_size=8", "model.layers=choice(0)"]
    space += ["optimizer.lr=tag(log, interval(0.0001, 0.1))"]
    first = run_train(*SEARCH, "hydra.sweeper.n_trials=2", *space, data=tiny_mnist, out=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_train(*SEARCH, "hydra.sweeper.n_trials=3", *space, data=tiny_mnist, out=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 trials so far, 1 to run for n_trials=3" in second.stdout
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    trials = optuna.load_study(study_name="rnnexp", storage=JournalStorage(JournalFileBackend(str(journal)))).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 3
    assert all(t.user_attrs["reason"] == "config" for t in trials)
    assert not (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b'{"op_code": 0\n', b"[1, 2]\n"])
def test_a_journal_that_is_not_one_is_named_in_one_line(tmp_path, tiny_mnist, content):
    journal = tmp_path / "study.log"
    journal.write_bytes(content)
    proc = run_train(*SEARCH, f"hydra.sweeper.storage=journal:///{journal}", data=tiny_mnist, out=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: hydra.sweeper.storage=journal:///{journal}: {journal} cannot be read or written")
    assert not (tmp_path / "multirun").exists()


def test_a_journal_the_file_system_refuses_is_named_in_one_line_with_the_right_fix(tmp_path, tiny_mnist):
    journal = "/proc/rnnexp-study.log"  # a folder that exists, where no file can be made (even by root)
    proc = run_train(*SEARCH, f"hydra.sweeper.storage=journal:///{journal}", data=tiny_mnist, out=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: hydra.sweeper.storage=journal:///{journal}: {journal} cannot be read or written")
    assert line.endswith("point hydra.sweeper.storage at a file in a folder this user can write")  # not: move it away


def popen_train(*overrides: str, data: Path, out: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "RNNEXP_DATA_DIR": str(data), "RNNEXP_OUTPUT_DIR": str(out)}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "rnnexp.train", *overrides]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(command, cwd=ROOT, env=env, text=True, **pipes, **popen)


def test_two_searches_started_together_on_a_fresh_database_share_its_n_trials(tmp_path, tiny_mnist):
    space = ["hydra.sweeper.n_trials=4", "model.hidden_size=8", "model.layers=choice(0)"]
    space += ["optimizer.lr=tag(log, interval(0.0001, 0.1))"]
    procs = []
    for i in range(2):
        procs.append(
            popen_train(*SEARCH, *space, f"hydra.sweep.dir={tmp_path}/multirun/s{i}", data=tiny_mnist, out=tmp_path)
        )
        time.sleep(0.2)  # both open the fresh SQLite file, the second while the first creates its tables
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "already exists" not in out + err
    trials = study(tmp_path).trials
    assert len(trials) == 4 and [t.number for t in trials] == [0, 1, 2, 3]  # 4 in all, not 4 each
    states = [(t.number, t.state.name, t.user_attrs.get("reason")) for t in trials]
    assert all(state[1:] == ("FAIL", "config") for state in states), states


def waiting_on_flock(pid: int) -> bool:
    """Whether process `pid` is blocked waiting for a flock (its request listed after `->` in /proc/locks)."""
    return any(
        line.split()[1] == "->" and line.split()[2] == "FLOCK" and line.split()[5] == str(pid)
        for line in Path("/proc/locks").read_text().splitlines()
    )


def test_a_search_starting_while_another_asks_for_a_trial_leaves_that_trial_alone(tmp_path, tiny_mnist):
    from rnnexp.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    other = optuna.create_study(study_name="rnnexp", storage=storage, direction="maximize")
    with open(tmp_path / "optuna.db.ask-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another search, between asking for a trial and marking it its own
        trial = other.ask()
        proc = popen_train(*SEARCH, "hydra.sweeper.n_trials=2", "model.layers=choice(0)", data=tiny_mnist, out=tmp_path)
        try:
            deadline = time.monotonic() + 120
            while not waiting_on_flock(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            # it waits before looking for abandoned trials: without the lock it failed this one as killed
            assert waiting_on_flock(proc.pid), proc.poll()
            assert other.trials[0].state == optuna.trial.TrialState.RUNNING
            trial.set_user_attr("sweeper", {"host": socket.gethostname(), "pid": os.getpid()})
        except BaseException:
            proc.kill()
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    first, second = study(tmp_path).trials
    assert first.state == optuna.trial.TrialState.RUNNING  # left to its own search
    assert second.state == optuna.trial.TrialState.FAIL and second.user_attrs["reason"] == "config"


# --- workers


def test_n_jobs_with_a_launcher_that_runs_jobs_in_this_process_is_refused_in_one_line(tmp_path, tiny_mnist):
    proc = run_train(*SEARCH, "hydra.sweeper.n_jobs=2", "model.layers=choice(0)", data=tiny_mnist, out=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "error: hydra.sweeper.n_jobs=2: BasicLauncher runs each trial in this process, one at a time"
    )
    assert not (tmp_path / "multirun").exists()


def test_a_worker_starts_the_next_trial_while_the_other_still_runs(tmp_path, tiny_mnist):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    queued = optuna.create_study(study_name="rnnexp", storage=storage, direction="maximize")
    queued.enqueue_trial({"model.hidden_size": 8})  # trial 0 trains
    for _ in range(3):
        queued.enqueue_trial({"model.hidden_size": 0})  # trials 1, 2 (and the one left waiting): refused at once
    proc = run_train(
        *SEARCH,
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=8",
        "model.hidden_size=choice(0, 8)",
        data=tiny_mnist,
        out=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 workers" in proc.stdout
    trials = study(tmp_path).get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL))
    assert len(trials) == 3  # exactly n_trials (the fourth enqueued stays waiting)
    long, short, after = trials
    assert long.state == optuna.trial.TrialState.COMPLETE and short.state == after.state == optuna.trial.TrialState.FAIL
    # the second worker took trial 2 as soon as trial 1 ended, while trial 0 still trained (no batch to wait for)
    assert short.datetime_complete <= after.datetime_start < long.datetime_complete, [
        (t.number, t.datetime_start, t.datetime_complete) for t in trials
    ]


def test_a_study_store_opens_without_torch_or_lightning(tmp_path):
    """The report of a search and the store's race (below) do not wait seconds for torch and Lightning:
    rnnexp.storage opens a store, and rnnexp.report and rnnexp.search_report load, without them."""
    loaded = "sorted({'torch', 'pytorch_lightning'} & set(sys.modules))"
    code = (
        "import sys; from rnnexp.storage import open_storage, storage_url; import rnnexp.report, rnnexp.search_report; "
        f"open_storage(storage_url(sys.argv[1])); print({loaded})"
    )
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    out = subprocess.run([sys.executable, "-c", code, storage], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr[-3000:])
    assert (tmp_path / "optuna.db").is_file()


# Each process: its imports done, it says so and waits at the gate (a byte on its standard input, which the test
# sends each of them once all three are waiting: they go on together, whatever their imports took).
GATE = """
import sys
print("ready", flush=True)
sys.stdin.read(1)
"""

RACE = f"""
import optuna
from rnnexp.storage import open_storage
{GATE}
optuna.create_study(study_name="rnnexp", storage=open_storage(sys.argv[1]), load_if_exists=True)
"""

WATCH = f"""
import sqlite3, time
from pathlib import Path
{GATE}
path, deadline = Path(sys.argv[1].removeprefix("sqlite:///")), time.monotonic() + 60
while not path.exists() and time.monotonic() < deadline:
    pass
# the moment the file is there, it has all its tables and version rows (a reader never sees it half-made)
print(sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchall())
"""


def test_two_processes_opening_one_fresh_database_at_once_both_open_it(tmp_path):
    # optuna's RDBStorage alone: one of the two dies with "table studies already exists" (or a
    # duplicate alembic_version row) nearly every time
    for attempt in range(3):
        storage = f"sqlite:///{tmp_path / f'optuna{attempt}.db'}"
        pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs = [subprocess.Popen([sys.executable, "-c", code, storage], **pipes) for code in (RACE, RACE, WATCH)]
        try:
            for proc in procs:  # each past its imports, at the gate
                assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=60)[1][-3000:]
            for proc in procs:  # through, all at once
                proc.stdin.write("go")
                proc.stdin.flush()
            for proc in procs:
                out, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err[-3000:]
        finally:
            for proc in procs:
                proc.kill()
        assert len(eval(out)) == 1  # the watcher's one alembic_version row
        assert len(optuna.get_all_study_summaries(storage)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna0.db", "optuna1.db", "optuna2.db"]  # no drafts left


def test_ctrl_c_stops_a_search_of_two_workers_its_running_trials_failed_as_interrupted(tmp_path, tiny_mnist):
    proc = popen_train(
        *SEARCH,
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        "trainer.max_epochs=500",  # runs until stopped
        "model.hidden_size=choice(8, 16)",
        data=tiny_mnist,
        out=tmp_path,
        start_new_session=True,  # Ctrl-C reaches the whole group: the sweep and joblib's workers
        preexec_fn=terminal(),
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # both trials' jobs are training: each has told the study its run
            time.sleep(1)
            if (tmp_path / "optuna.db").exists():
                try:
                    running = study(tmp_path).get_trials(states=(optuna.trial.TrialState.RUNNING,))
                except KeyError:  # the database is there, the study not yet
                    continue
                if len([t for t in running if "run_dir" in t.user_attrs]) == 2:
                    break
        else:
            pytest.fail("the two trials did not start within 300 s")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    said = "interrupted (SIGINT): the search's running trials are FAIL (interrupted) in study rnnexp"
    assert any(line.startswith(said) for line in err.splitlines()), err[-3000:]  # the workers may write after it
    trials = study(tmp_path).trials
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert [t.user_attrs["reason"] for t in trials] == ["interrupted", "interrupted"]
    time.sleep(2)
    with pytest.raises(ProcessLookupError):  # nothing of the search outlives it
        os.killpg(proc.pid, 0)


def test_the_report_of_a_search_weighs_its_parameters_plots_it_and_reruns_the_best_trial(tmp_path, tiny_mnist, capsys):
    from rnnexp.report import main as report

    space = ["model.hidden_size=choice(4,8,16)", "optimizer.lr=tag(log, interval(0.003, 0.05))"]
    proc = run_train(*SEARCH, "hydra.sweeper.n_trials=5", *space, data=tiny_mnist, out=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = sweeps(tmp_path)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    report([str(sweep)])
    printed = capsys.readouterr().out
    assert "Parameter importances (PED-ANOVA):" in printed
    assert "- model.hidden_size: " in printed and "- optimizer.lr: " in printed
    assert (sweep / "search.png").read_bytes().startswith(b"\x89PNG")
    command = printed.split("trained again with its test:\n", 1)[1].strip().splitlines()[0].split()
    assert command[:3] == ["python", "-m", "rnnexp.train"] and command[-1] == "test=true"
    assert not any(a.startswith(("hparams_search=", "trial=")) for a in command)
    again = run_train(*command[3:], data=tiny_mnist, out=tmp_path / "again")  # the best trial, trained again
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads(only((tmp_path / "again" / "runs").iterdir()).joinpath("metrics.json").read_text())
    assert rerun["val/acc_best"] == results["best_value"] and "test/acc" in rerun


def test_the_report_of_a_search_whose_study_is_gone_says_so_and_makes_no_empty_one(tmp_path):
    from rnnexp.search_report import report

    gone = tmp_path / "optuna.db"
    (tmp_path / "optimization_results.yaml").write_text(f"study_name: rnnexp\nstorage: sqlite:///{gone}\n")
    lines = report(tmp_path, tmp_path)
    assert any(line.startswith("its study cannot be opened") for line in lines)
    assert not gone.exists()
