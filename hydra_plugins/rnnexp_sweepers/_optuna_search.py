"""The search loop behind `hydra/sweeper=rnnexp_optuna` (see optuna_sweeper.py): ask a batch of
trials, launch them as Hydra jobs, tell the study how each ended, until the study holds n_trials."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from rnnexp.errors import ConfigError
from rnnexp.record import RunRecord, process_alive
from rnnexp.study import storage_errors, storage_url

log = logging.getLogger(__name__)

RESULTS = "optimization_results.yaml"


class OptunaSearch(OptunaSweeperImpl):
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
    ) -> None:
        super().__init__(
            None, direction, storage_url(storage), study_name, n_trials, n_jobs, 1.0, search_space,
            custom_search_space, params,
        )  # fmt: skip
        self.sampler_conf, self.pruner_conf = sampler, pruner

    def sweep(self, arguments: list[str]) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # this sweeper says what optuna would, once
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
        space = {**(self.search_space_distributions or {}), **space}
        for name in fixed:
            space.pop(name, None)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        try:
            with storage_errors(self.storage):
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=self.storage,
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
        sweep_dir.mkdir(parents=True, exist_ok=True)  # once the study opened: a refused search leaves no folder
        abandon_stale(study)
        before = len(study.trials)
        study.sampler = self.new_sampler(before)
        todo = max(self.n_trials - before, 0)
        log.info(
            f"Study {study.study_name} in {self.storage}: {before} trials so far, {todo} to run for "
            f"n_trials={self.n_trials}; sampler {type(study.sampler).__name__}, pruner {type(study.pruner).__name__}"
        )
        while (done := len(study.trials)) < self.n_trials:
            trials = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - done))]
            overrides = self._configure_trials(trials, space, fixed)
            # trial=N: the job reports to this trial (and its folder is numbered by it, never reused)
            overrides = [(*o, f"trial={t.number}") for t, o in zip(trials, overrides)]
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            except Exception as err:  # the launcher lost the batch: a worker killed, a job Hydra could not compose
                for trial in trials:
                    fail(study, trial.number, _reason(err), _error(err))
                log.error(f"trials {[t.number for t in trials]} failed: {err}")
                continue
            except BaseException:  # Ctrl-C or a stop signal: the sweep stops, its trials end as failed
                for trial in trials:
                    fail(study, trial.number, "interrupted", "the sweep was stopped while it ran")
                raise
            for trial, ret in zip(trials, returns):
                self.tell(study, trial.number, ret)
        summarize(study, sweep_dir, str(self.config.get("optimized_metric", "value")), self.n_trials)

    def new_sampler(self, trials_so_far: int) -> optuna.samplers.BaseSampler:
        """The configured sampler; a seeded one is seeded with seed + trials so far, so that a
        continued study draws new parameters rather than the first run's again."""
        seed = self.sampler_conf.get("seed")
        return instantiate(self.sampler_conf, **({"seed": seed + trials_so_far} if seed is not None else {}))

    def tell(self, study: optuna.Study, number: int, ret: JobReturn) -> None:
        run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg else None
        record = RunRecord.read(run_dir) if run_dir else {}
        if run_dir:
            study._storage.set_trial_user_attr(trial_id(study, number), "run_dir", str(run_dir))
        if ret.status != JobStatus.COMPLETED:
            err = ret._return_value
            fail(study, number, record.get("reason") or _reason(err), record.get("error") or _error(err))
            return
        value = ret.return_value
        if record.get("status") == "pruned":
            study.tell(number, state=TrialState.PRUNED)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            study.tell(number, float(value))
        else:  # a NaN, or no value: the run ended without the metric
            metric = self.config.get("optimized_metric")
            fail(study, number, "no value", f"the run returned {value!r} for {metric}", record_run=False)


def trial_id(study: optuna.Study, number: int) -> int:
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def fail(study: optuna.Study, number: int, reason: str, error: str, record_run: bool = True) -> None:
    """FAIL in the study, with its reason; `failed` in its run folder too where the run could not
    say so itself (rejected before it started, or killed)."""
    tid = trial_id(study, number)
    study._storage.set_trial_user_attr(tid, "reason", reason)
    study._storage.set_trial_user_attr(tid, "error", error[:1000])
    study.tell(number, state=TrialState.FAIL)
    run_dir = study._storage.get_trial(tid).user_attrs.get("run_dir")
    log.warning(f"trial {number} failed ({reason}): {error}")
    if record_run and run_dir and RunRecord.read(run_dir).get("status") in (None, "running"):
        RunRecord(run_dir).update(status="failed", reason=reason, error=error)


def abandon_stale(study: optuna.Study) -> None:
    """Trials left RUNNING by a sweep that was killed: FAIL, their runs `failed` (killed)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run_dir = trial.user_attrs.get("run_dir")
        if run_dir and process_alive(RunRecord.read(run_dir), run_dir):
            continue  # another sweep's, still at work
        fail(study, trial.number, "killed", "the sweep ended while this trial ran")


def _reason(err: BaseException) -> str:
    from rnnexp.run import expected

    known = expected(err) if isinstance(err, BaseException) else None
    return known.reason if known else "exception"


def _error(err: BaseException) -> str:
    from rnnexp.run import expected

    known = expected(err) if isinstance(err, BaseException) else None
    return str(known) if known else f"{type(err).__name__}: {err}"


def summarize(study: optuna.Study, sweep_dir: Path, metric: str, n_trials: int) -> dict:
    """Print and save (optimization_results.yaml) how the study's trials ended and the best."""
    trials = study.get_trials(deepcopy=False)
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
        log.info(f"Best parameters: {best.params}")
        log.info(f"Best value: {best.value}")
    else:
        log.warning("Best: none, no trial completed")
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS)
    return results
