"""The search loop behind `hydra/sweeper=rnnexp_optuna` (see optuna_sweeper.py): `n_jobs` workers,
each asking the study for a trial, launching it as a Hydra job and telling the study how it ended,
then asking for the next, until the study holds n_trials. Optuna's public API only: the study's
storage is opened here (rnnexp.storage.open_storage) and trials are reached by number through it."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.rnnexp_sweepers import _search_space
from rnnexp.compat.hydra import failed_job_error
from rnnexp.errors import ConfigError
from rnnexp.record import RunRecord, process_alive
from rnnexp.run import Interrupted
from rnnexp.storage import JOURNAL, open_storage, storage_errors, storage_url
from rnnexp.study import StudyTrial

log = logging.getLogger(__name__)

RESULTS = "optimization_results.yaml"
STARTED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)  # not WAITING (enqueued)


class OptunaSearch:
    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: str,
        storage: Any,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        params: DictConfig | None = None,
        search_space: DictConfig | None = None,
        custom_search_space: str | None = None,
        retry_killed: bool = False,
    ) -> None:
        self.sampler_conf, self.pruner_conf, self.direction = sampler, pruner, direction
        self.storage, self.study_name, self.n_trials, self.n_jobs = storage_url(storage), study_name, n_trials, n_jobs
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
        self.search_space = OmegaConf.to_container(search_space) if isinstance(search_space, DictConfig) else None
        self.custom_search_space = get_method(custom_search_space) if custom_search_space else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running: set[int] = set()  # trials of this sweep that a worker has launched and not yet told
        self.retry_killed = retry_killed
        self._retries: list[tuple[int, Path]] = []  # killed trials to continue, each from its run folder

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # this sweeper says what optuna would, once
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # tpe's multivariate
        space = _search_space.from_search_space(self.search_space or {})
        parsed = _search_space.parse([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        space.distributions.update(parsed.distributions)
        space.keys.update(parsed.keys)
        space.fixed.update(parsed.fixed)
        for name in parsed.fixed:
            space.distributions.pop(name, None)
        workers = self.workers()
        sweep_dir = Path(self.config.hydra.sweep.dir)
        with storage_errors(self.storage):
            self.store = open_storage(self.storage)
            study = self.open_study()
        sweep_dir.mkdir(parents=True, exist_ok=True)  # once the study opened: a refused search leaves no folder
        # the command that made it, as Hydra's grid sweeper saves it: resume=<this folder> continues the search
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        # under the lock that ask() holds between asking for a trial and marking it this sweep's: another
        # search on the same study never finds its new trial unmarked and fails it as abandoned
        with storage_errors(self.storage), self._store_lock():
            self._retries = abandon_stale(study, self.store, retry=self.retry_killed)
            before = started(study)
        study.sampler = self.new_sampler(before)
        log.info(
            f"Study {study.study_name} in {self.storage}: {before} trials so far, {max(self.n_trials - before, 0)} to "
            f"run for n_trials={self.n_trials}; sampler {type(study.sampler).__name__}, pruner "
            f"{type(study.pruner).__name__}" + (f", {workers} workers" if workers > 1 else "")
        )
        if workers == 1:
            self.work(study, space)
        else:
            self.run_workers(study, space, workers)
        summarize(study, sweep_dir, str(self.config.get("optimized_metric", "value")), self.n_trials, self.storage)

    def open_study(self) -> optuna.Study:
        try:
            return optuna.create_study(
                study_name=self.study_name,
                storage=self.store,
                pruner=instantiate(self.pruner_conf),
                direction=self.direction,
                load_if_exists=True,
            )
        except ValueError as err:  # optuna's "Cannot overwrite study direction"
            if "direction" not in str(err):
                raise
            raise ConfigError(
                f"hydra.sweeper.direction={self.direction}: study {self.study_name} in {self.storage} optimizes the "
                "other way; give this search its own hydra.sweeper.study_name"
            ) from err

    def workers(self) -> int:
        """How many trials run at once: n_jobs, where the launcher runs each job out of this process
        (joblib's worker processes, submitit's jobs), so that its launch() may be called from several
        threads; Hydra's basic launcher runs a job in this process, changing its globals (the Hydra
        config, the working directory, logging), one at a time. Read in hydra-joblib-launcher 1.2:
        each launch() builds its own joblib.Parallel (backend loky) over loky's one reusable executor,
        whose creation and submit are under loky's lock and which is reused as long as n_jobs and its
        settings are the same (they are: the launcher's); joblib's n_jobs=1 would run the job in the
        calling thread (its sequential backend), so that is refused. hydra-submitit-launcher 1.2: each
        launch() makes its own submitit executor and waits for its own jobs."""
        if self.n_jobs == 1:
            return 1
        module = type(self.launcher).__module__
        if module.startswith("hydra_plugins.hydra_joblib_launcher"):
            import joblib

            n = joblib.effective_n_jobs(self.launcher.joblib.get("n_jobs", -1))
            if n > 1:
                if n < self.n_jobs:
                    log.info(f"hydra.sweeper.n_jobs={self.n_jobs}: {n} at once, joblib's hydra.launcher.n_jobs")
                return min(self.n_jobs, n)  # joblib's 1 runs the job in this process (its sequential backend)
        elif module.startswith(("hydra_plugins.hydra_submitit_launcher", "hydra_plugins.rnnexp_launchers")):
            return self.n_jobs
        raise ConfigError(
            f"hydra.sweeper.n_jobs={self.n_jobs}: {type(self.launcher).__name__} runs each trial in this process, "
            "one at a time; add hydra/launcher=parallel (hydra.launcher.n_jobs of 2 or more) or hydra/launcher=slurm, "
            "or set hydra.sweeper.n_jobs=1"
        )

    def run_workers(self, study: optuna.Study, space: _search_space.SearchSpace, workers: int) -> None:
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                self.work(study, space)
            except BaseException as err:  # a broken store, a custom_search_space that raised: the sweep stops
                errors.append(err)
                self._stop.set()

        threads = [threading.Thread(target=worker, name=f"trial-worker-{i}", daemon=True) for i in range(workers)]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.5)  # a short wait: Ctrl-C reaches this (the main) thread
        except BaseException as err:  # Ctrl-C or a stop signal: the sweep stops, its running trials end as failed
            self._stop.set()
            for number in list(self._running):
                fail(study, self.store, number, "interrupted", "the sweep was stopped while it ran")
            if isinstance(err, KeyboardInterrupt) and not isinstance(err, Interrupted):  # reached this thread itself
                raise Interrupted(
                    f"interrupted (SIGINT): the search's running trials are FAIL (interrupted) in study "
                    f"{study.study_name}; the same command continues it to n_trials={self.n_trials}"
                ) from None
            raise
        if errors:
            raise errors[0]

    def work(self, study: optuna.Study, space: _search_space.SearchSpace) -> None:
        """One worker: the next trial as soon as the last one ended, until the study holds n_trials."""
        while not self._stop.is_set():
            with self._lock:
                retry = self._retries.pop(0) if self._retries else None
            if retry is not None:  # a killed trial, continued in its own folder from its last.ckpt
                number, overrides = retry[0], continue_in(*retry)
            else:
                trial = self.ask(study, space)
                if trial is None:
                    return
                # trial=N: the job reports to this trial (and its folder is numbered by it, never reused)
                number, overrides = trial.number, [*space.overrides(trial.params), f"trial={trial.number}"]
            self._running.add(number)
            try:
                (ret,) = self.launcher.launch([overrides], initial_job_idx=number)
            except Exception as err:  # the launcher lost the job: a worker killed, a job Hydra could not compose
                fail(study, self.store, number, _reason(err), _error(err))
                continue
            except BaseException:  # Ctrl-C or a stop signal: the sweep stops, its trial ends as failed
                self._stop.set()
                fail(study, self.store, number, "interrupted", "the sweep was stopped while it ran")
                raise
            finally:
                self._running.discard(number)
            with storage_errors(self.storage):
                self.tell(study, number, ret)

    def ask(self, study: optuna.Study, space: _search_space.SearchSpace) -> optuna.Trial | None:
        """The next trial, None once the study holds n_trials (this sweep's and any other's on the
        same study: counted and asked under a lock, the store's own file's for SQLite and journal)."""
        with self._lock, self._store_lock(), storage_errors(self.storage):
            if started(study) >= self.n_trials:
                return None
            trial = study.ask(space.distributions)
            # whose trial this is, while no job has yet recorded its run: another sweep's abandon_stale leaves it
            trial.set_user_attr("sweeper", {"host": socket.gethostname(), "pid": os.getpid()})
        if self.custom_search_space:
            self.custom_search_space(self.config, trial)
        return trial

    @contextlib.contextmanager
    def _store_lock(self):
        """Other processes' searches on the same study file wait here: SQLite's with flock, which its own
        locking relies on too; a journal's with Optuna's symlink lock, which works on NFS."""
        url = str(self.storage)
        if url.startswith(JOURNAL):
            from optuna.storages.journal import JournalFileSymlinkLock

            lock = JournalFileSymlinkLock(url.removeprefix(JOURNAL) + ".ask")  # <journal>.ask.lock while held
            lock.acquire()
            try:
                yield
            finally:
                lock.release()
        elif url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            with open(url.removeprefix("sqlite:///") + ".ask-lock", "a") as lock:  # beside the database
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        else:  # in memory: this process's only; a database server: see the README
            yield

    def new_sampler(self, trials_so_far: int) -> optuna.samplers.BaseSampler:
        """The configured sampler; a seeded one is seeded with seed + trials so far, so that a
        continued study draws new parameters rather than the first run's again."""
        seed = self.sampler_conf.get("seed")
        return instantiate(self.sampler_conf, **({"seed": seed + trials_so_far} if seed is not None else {}))

    def tell(self, study: optuna.Study, number: int, ret: JobReturn) -> None:
        run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg else None
        record = RunRecord.read(run_dir) if run_dir else {}
        trial = StudyTrial(study, self.store, number)
        if trial.frozen().state.is_finished():  # failed meanwhile by another sweep, or on interruption
            return
        if run_dir:
            trial.set_user_attr("run_dir", str(run_dir))
        if ret.status != JobStatus.COMPLETED:
            err = failed_job_error(ret)
            fail(study, self.store, number, record.get("reason") or _reason(err), record.get("error") or _error(err))
            return
        value = ret.return_value  # COMPLETED: the job's return value
        if record.get("status") == "pruned":
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            study.tell(number, float(value), skip_if_finished=True)
        else:  # a NaN, or no value: the run ended without the metric
            metric = self.config.get("optimized_metric")
            fail(study, self.store, number, "no value", f"the run returned {value!r} for {metric}", record_run=False)


def started(study: optuna.Study) -> int:
    """The study's trials that count toward n_trials: all but those enqueued and not yet asked for."""
    return len(study.get_trials(deepcopy=False, states=STARTED))


def fail(study: optuna.Study, store, number: int, reason: str, error: str, record_run: bool = True) -> None:
    """FAIL in the study, with its reason; `failed` in its run folder too where the run could not
    say so itself (rejected before it started, or killed)."""
    trial = StudyTrial(study, store, number)
    if trial.frozen().state.is_finished():
        return
    trial.set_user_attr("reason", reason)
    trial.set_user_attr("error", error[:1000])
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    run_dir = trial.frozen().user_attrs.get("run_dir")
    log.warning(f"trial {number} failed ({reason}): {error}")
    if record_run and run_dir and RunRecord.read(run_dir).get("status") in (None, "running"):
        RunRecord(run_dir).update(status="failed", reason=reason, error=error)


def alive(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a RUNNING trial is still being worked on: its job's process, or the sweep that asked
    for it (which will tell the study how it ended). The one place the sweeper asks
    rnnexp.record.process_alive."""
    run_dir = trial.user_attrs.get("run_dir")
    if run_dir and process_alive(RunRecord.read(run_dir), run_dir):  # its heartbeat, from any host
        return True
    return process_alive(trial.user_attrs.get("sweeper") or {})  # asked for, its job not started yet


def abandon_stale(study: optuna.Study, store, retry: bool = False) -> list[tuple[int, Path]]:
    """Trials left RUNNING by a sweep that was killed: FAIL, their runs `failed` (killed); with `retry`,
    those whose run saved a last.ckpt and was not retried before stay RUNNING, to be continued: their
    (number, run folder)."""
    from rnnexp.checkpoint import LAST

    retries = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if alive(trial):
            continue
        run_dir = Path(trial.user_attrs["run_dir"]) if trial.user_attrs.get("run_dir") else None
        if retry and run_dir and (run_dir / "checkpoints" / LAST).is_file() and not trial.user_attrs.get("retried"):
            StudyTrial(study, store, trial.number).set_user_attr("retried", True)  # once: a second kill fails it
            log.info(f"trial {trial.number} was killed; it continues from {run_dir / 'checkpoints' / LAST}")
            retries.append((trial.number, run_dir))
            continue
        fail(study, store, trial.number, "killed", "the sweep ended while this trial ran")
    return retries


def continue_in(number: int, run_dir: Path) -> list[str]:
    """The overrides of a job that continues trial `number` in its run folder: the job's own (as Hydra
    saved them there), its folder as the sweep's, and resume (the job then takes its saved config)."""
    saved = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    kept = [str(o) for o in saved if not str(o).startswith(("resume=", "trial="))]
    return [*kept, f"trial={number}", f'resume="{run_dir}"', f'hydra.sweep.dir="{run_dir.parent}"',
            f'hydra.sweep.subdir="{run_dir.name}"']  # fmt: skip


def _reason(err: BaseException | None) -> str:
    from rnnexp.run import expected

    known = expected(err) if isinstance(err, BaseException) else None
    return known.reason if known else "exception"


def _error(err: BaseException | None) -> str:
    from rnnexp.run import expected

    known = expected(err) if isinstance(err, BaseException) else None
    return str(known) if known else f"{type(err).__name__}: {err}"


def summarize(study: optuna.Study, sweep_dir: Path, metric: str, n_trials: int, storage: Any = None) -> dict:
    """Print and save (optimization_results.yaml) how the study's trials ended and the best; where
    the study lives, for `python -m rnnexp.report` (rnnexp/search_report.py)."""
    trials = study.get_trials(deepcopy=False, states=STARTED)
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    by_state = {s: [t for t in trials if t.state == s] for s in states}
    failures = [
        {"trial": t.number, "reason": t.user_attrs.get("reason", "exception"), "error": t.user_attrs.get("error", "")}
        | ({"run_dir": t.user_attrs["run_dir"]} if "run_dir" in t.user_attrs else {})
        for t in by_state[TrialState.FAIL]
    ]
    results: dict = {
        "name": "optuna",
        "study_name": study.study_name,
        "n_trials": len(trials),
        "completed": len(by_state[TrialState.COMPLETE]),
        "pruned": len(by_state[TrialState.PRUNED]),
        "failed": len(failures),
        "failures": failures,
        **({"storage": storage} if isinstance(storage, str) else {}),
    }
    log.info(
        f"Study {study.study_name}: {len(trials)} trials (n_trials={n_trials}): {results['completed']} completed, "
        f"{results['pruned']} pruned, {results['failed']} failed"
    )
    for f in failures:
        log.info(f"  trial {f['trial']} failed ({f['reason']}): {f['error'][:300]}")
    if by_state[TrialState.COMPLETE]:
        best = study.best_trial
        results.update(
            best_trial=best.number, best_params=best.params, best_value=best.value, metric=metric,
            best_run_dir=best.user_attrs.get("run_dir"),
        )  # fmt: skip
        log.info(f"Best: trial {best.number}, {metric}={best.value:.4f}: {best.params}")
    else:
        log.warning("Best: none, no trial completed")
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS)
    return results
