"""A job's side of an Optuna search (`-m hparams_search=optuna`): its trial in the study, the
validation result of every epoch reported to it, and the pruner's verdict.

The sweeper (hydra_plugins/rnnexp_sweepers) passes each job its trial number as `trial=N`; the job
finds the study through the sweeper's own config (storage, study_name, pruner). A trial the pruner
stops ends training after that epoch, is not tested, and is recorded `pruned`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from rnnexp.errors import ConfigError, OutputError, StoreError

log = logging.getLogger("rnnexp")

# The Python module SQLAlchemy imports for a URL's database, and the package that holds it.
DRIVERS = {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL", "cx_Oracle": "cx_Oracle"}


def storage_url(storage: Any) -> Any:
    """A SQLite URL with an absolute path (`sqlite:///rel` is relative to the working directory of
    whichever process opens it), its folder created: SQLite does not create it."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:///") or storage == "sqlite:///:memory:":
        return storage
    path = Path(storage.removeprefix("sqlite:///")).expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"{_key(storage)}: cannot create its folder {path.parent} ({err.strerror}: {err.filename}); point "
            "hydra.sweeper.storage at a file in a writable folder"
        ) from err
    return f"sqlite:///{path}"


@contextlib.contextmanager
def storage_errors(storage: Any):
    """Around opening or writing a study's storage (`hydra.sweeper.storage`, an SQLAlchemy URL): what
    is wrong with it, in one line that names the URL (without its password): a scheme no installed
    driver serves, a driver that is missing, a file that is not a database, a full disk."""
    import sqlite3

    import optuna
    import sqlalchemy.exc

    try:
        yield
    except (ImportError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        chain = _chain(err)  # optuna wraps what a commit raises in StorageInternalError
        database = next((e for e in chain if isinstance(e, sqlalchemy.exc.DatabaseError)), None)
        if isinstance(err, ImportError):  # optuna's, from SQLAlchemy's import of the driver
            missing = next((e.name for e in chain if isinstance(e, ModuleNotFoundError) and e.name), None)
            install = f"pip install {DRIVERS.get(missing, missing)}" if missing else "install its database driver"
            raise ConfigError(
                f"{_key(storage)}: its database driver{f' ({missing})' if missing else ''} is not installed; "
                f"{install}, or keep the study in SQLite (hydra.sweeper.storage=sqlite:///<file>)"
            ) from err
        if isinstance(err, sqlalchemy.exc.ArgumentError):  # NoSuchModuleError: a scheme no dialect serves
            raise ConfigError(
                f"{_key(storage)}: not a database URL SQLAlchemy can open ({_first(err)}); use sqlite:///<file> (the "
                "default keeps outputs/optuna.db), or postgresql://... or mysql://... with their drivers installed"
            ) from err
        if database is None:
            raise
        cause = database.orig or database
        if getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:  # a trial reporting to a full disk
            raise OutputError(
                f"{_key(storage)}: cannot write the study's database ({_first(cause)}); free space on its disk"
            ) from err
        if str(storage).startswith("sqlite:///") and "not a database" in str(cause):
            path = str(storage).removeprefix("sqlite:///")
            raise StoreError(
                f"{_key(storage)}: {path} is not an SQLite database ({_first(cause)}); move it away to start the "
                "study afresh, or point hydra.sweeper.storage at the study's database"
            ) from err
        raise StoreError(
            f"{_key(storage)}: the study's database failed ({_first(cause)}); check the URL, that the database is "
            "up and this user may write to it"
        ) from err


def _key(storage: Any) -> str:
    """`hydra.sweeper.storage=<URL>`, a password in it hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        shown = make_url(str(storage)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        shown = str(storage)
    return f"hydra.sweeper.storage={shown}"


def _chain(err: BaseException) -> list[BaseException]:
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _first(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def trial_report(cfg: DictConfig) -> TrialReport | None:
    """The callback that reports to this job's trial; None outside a search whose study a job can
    reach (a study in memory, or with no name)."""
    from hydra.core.hydra_config import HydraConfig

    number = cfg.get("trial")
    sweeper = HydraConfig.get().sweeper if number is not None and HydraConfig.initialized() else None
    if not sweeper or not sweeper.get("storage") or not sweeper.get("study_name") or "pruner" not in sweeper:
        return None
    import optuna
    from hydra.utils import instantiate

    with storage_errors(sweeper.storage):
        study = optuna.load_study(
            study_name=sweeper.study_name, storage=storage_url(sweeper.storage), pruner=instantiate(sweeper.pruner)
        )
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    if study._storage.get_trial(trial_id).state.is_finished():  # a trial's run resumed after its search
        log.info(f"trial {number} of study {sweeper.study_name} has ended; this run no longer reports to it")
        return None
    trial = optuna.trial.Trial(study, trial_id)
    trial.set_user_attr("run_dir", str(cfg.paths.run_dir))  # for the sweeper, should this job be killed
    metric = cfg.optimized_metric if str(cfg.optimized_metric).startswith("val/") else "val/acc"
    return TrialReport(trial, metric, sweeper.storage)


class TrialReport(pl.Callback):
    """After every validation: the metric the study optimizes to the trial, and training stopped
    (after this epoch) when the pruner says the trial has fallen behind."""

    def __init__(self, trial, monitor: str, storage: Any = None):
        self.trial, self.monitor, self.storage = trial, monitor, storage
        self.pruned_at: int | None = None  # the epoch after which the pruner stopped the trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or self.pruned_at is not None:
            return
        with storage_errors(self.storage):  # the study's database, written to at every epoch
            self.trial.report(float(value), step=trainer.current_epoch)
            prune = self.trial.should_prune()
        if prune:
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True
            epoch = trainer.current_epoch
            log.info(f"trial {self.trial.number} pruned after epoch {epoch}: {self.monitor}={value:.4f}")


def dropout_between_layers(cfg: DictConfig, trial) -> None:
    """A search's `custom_search_space`: model.dropout only for stacked models (dropout acts between
    layers, and check() refuses it with one layer)."""
    if trial.params.get("model.layers", cfg.model.layers) > 1:
        trial.suggest_float("model.dropout", 0.0, 0.5)
