"""`hydra/sweeper=rnnexp_optuna`: an Optuna search that survives its trials and continues its study.

Configured by conf/hparams_search/optuna.yaml (`python -m rnnexp.train -m hparams_search=optuna`).
It takes Hydra's sweep grammar (choice, range, interval, tag(log, ...); _search_space.py) and uses
Optuna's public API only (ask/tell, its storages). Unlike hydra-optuna-sweeper's sweeper:

- `n_trials` is the study's total: rerunning the command with the same storage and study_name runs
  only the trials still missing, its sampler seeded with `seed + trials so far` (a fixed seed would
  draw the same parameters again);
- a trial that fails (an error, a refused value, a diverged or killed run, a NaN result) is FAIL in
  the study and `failed` in its run folder, and the search goes on;
- `n_jobs` workers each start the next trial as soon as their last one ended (none waits for a
  batch), until the study holds n_trials, counting those of other searches on the same study;
- every trial reports its validation accuracy after each epoch, and `pruner` stops those that fall
  behind (`hydra/sweeper/pruner=median|successive_halving|hyperband|none`): PRUNED in the study, `pruned` in
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
class TPESamplerConf:
    """Tree-structured Parzen estimator, over all parameters together (multivariate)."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None  # a continued study's sampler: seed + trials so far
    n_startup_trials: int = 10  # trials drawn at random before TPE models the results
    multivariate: bool = True
    constant_liar: bool = True  # trials still running count as bad, so that parallel workers spread out


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class GPSamplerConf:
    """Gaussian-process Bayesian optimization (scipy, torch)."""

    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    n_startup_trials: int = 10


@dataclass
class CmaEsSamplerConf:
    """CMA-ES (the cmaes package); categorical parameters are drawn at random."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = False


@dataclass
class QMCSamplerConf:
    """Quasi-Monte Carlo: a low-discrepancy sequence that covers the space evenly."""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = True
    warn_independent_sampling: bool = False


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
class HyperbandPrunerConf:
    """Hyperband: several successive-halving brackets of different aggressiveness."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"  # the epochs of the first trial that ends, or a number
    reduction_factor: int = 3


@dataclass
class NopPrunerConf:
    """No pruning: every trial trains to the end."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class RnnexpOptunaSweeperConf:
    _target_: str = "hydra_plugins.rnnexp_sweepers.optuna_sweeper.RnnexpOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds its sampler itself, seeded for the trials still to run
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING  # hydra/sweeper/sampler=tpe|random|gp|cmaes|qmc
    pruner: Any = MISSING
    direction: str = "maximize"  # of the job's return value, the config's optimized_metric
    # where the study lives: sqlite:///<file> (a relative path is taken from the working directory),
    # journal:///<file> (Optuna's journal file, for shared file systems), any other database URL
    # SQLAlchemy opens; null: in memory, neither continued nor pruned (a job cannot report to it)
    storage: Any = None
    study_name: str | None = None
    n_trials: int = 20  # the study's total: a continued study runs only the trials still missing
    n_jobs: int = 1  # trials run at once, by workers that never wait for each other (needs a launcher that
    # runs jobs out of this process: hydra/launcher=parallel or slurm)
    params: dict[str, str] | None = None  # key: search space in Hydra's sweep syntax (choice, interval, tag(log, ...))
    search_space: dict[str, Any] | None = None  # older form of params: {name: {type, low, high, step, log, choices}}
    custom_search_space: str | None = None  # a function (cfg, trial) that suggests conditional parameters
    # a trial whose run was killed (its worker, node or sweep gone) continues once from its last.ckpt, in its
    # own folder, when the search is run again; false: it is failed (killed) and a new trial drawn instead
    retry_killed: bool = False


_store = ConfigStore.instance().store
_store(group="hydra/sweeper", name="rnnexp_optuna", node=RnnexpOptunaSweeperConf, provider="rnnexp")
for _name, _node in (
    ("tpe", TPESamplerConf),
    ("random", RandomSamplerConf),
    ("gp", GPSamplerConf),
    ("cmaes", CmaEsSamplerConf),
    ("qmc", QMCSamplerConf),
):
    _store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="rnnexp")
_store(group="hydra/sweeper/pruner", name="hyperband", node=HyperbandPrunerConf, provider="rnnexp")
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
