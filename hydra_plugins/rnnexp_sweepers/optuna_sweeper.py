"""`hydra/sweeper=rnnexp_optuna`: an Optuna search that survives its trials and continues its study.

Configured by conf/hparams_search/optuna.yaml (`python -m rnnexp.train -m hparams_search=optuna`).
Against hydra-optuna-sweeper's own sweeper, whose search-space syntax and samplers it reuses:

- `n_trials` is the study's total: rerunning the command with the same storage and study_name runs
  only the trials still missing, its sampler seeded with `seed + trials so far` (a fixed seed would
  draw the same parameters again);
- a trial that fails (an error, a refused value, a diverged or killed run, a NaN result) is FAIL in
  the study and `failed` in its run folder, and the search goes on;
- every trial reports its validation accuracy after each epoch, and `pruner` stops those that fall
  behind (`hydra/sweeper/pruner=median|successive_halving|none`): PRUNED in the study, `pruned` in
  its run folder;
- the end prints and saves (optimization_results.yaml in the sweep folder) the trials completed,
  pruned and failed with each reason, and the best.

This module stays light (Hydra imports it on every start): optuna is imported when a search starts.
"""

# no `from __future__ import annotations`: Hydra executes this module before it is in sys.modules,
# where dataclasses cannot resolve string annotations (and OmegaConf needs the types themselves)
import logging
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig


@dataclass
class MedianPrunerConf:
    """Stops a trial whose validation accuracy is below the median of earlier trials' at the same epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # trials that run to the end before any is pruned
    n_warmup_steps: int = 0  # epochs a trial trains before it may be pruned (0: from its first validation on)
    interval_steps: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    """Asynchronous successive halving: at epochs min_resource * reduction_factor**k only the top
    1/reduction_factor of the trials go on."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: int = 1
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0


@dataclass
class NopPrunerConf:
    """No pruning: every trial trains to the end."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class RnnexpOptunaSweeperConf:
    _target_: str = "hydra_plugins.rnnexp_sweepers.optuna_sweeper.RnnexpOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds its sampler itself, seeded for the trials still to run
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING  # hydra-optuna-sweeper's hydra/sweeper/sampler options: tpe, random, cmaes, ...
    pruner: Any = MISSING
    direction: str = "maximize"  # of the job's return value, the config's optimized_metric
    # where the study lives; a relative sqlite path is taken from the working directory. null: in
    # memory, neither continued nor pruned (a job cannot report to it)
    storage: Any = None
    study_name: str | None = None
    n_trials: int = 20  # the study's total: a continued study runs only the trials still missing
    n_jobs: int = 1  # trials launched together (with a parallel launcher); each batch waits for the last
    params: dict[str, str] | None = None  # key: search space in Hydra's sweep syntax (choice, interval, tag(log, ...))
    search_space: dict[str, Any] | None = None  # hydra-optuna-sweeper's deprecated form of params
    custom_search_space: str | None = None  # a function (cfg, trial) that suggests conditional parameters


_store = ConfigStore.instance().store
_store(group="hydra/sweeper", name="rnnexp_optuna", node=RnnexpOptunaSweeperConf, provider="rnnexp")
_store(group="hydra/sweeper/pruner", name="median", node=MedianPrunerConf, provider="rnnexp")
_store(group="hydra/sweeper/pruner", name="successive_halving", node=SuccessiveHalvingPrunerConf, provider="rnnexp")
_store(group="hydra/sweeper/pruner", name="none", node=NopPrunerConf, provider="rnnexp")


class RnnexpOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna SQLite storage setup, line by line
        from hydra_plugins.rnnexp_sweepers._optuna_search import OptunaSearch

        self.search = OptunaSearch(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.search.sweep(arguments)
