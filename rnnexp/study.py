"""A job's side of an Optuna search (`-m hparams_search=optuna`): its trial in the study, the
validation result of every epoch reported to it, and the pruner's verdict.

The sweeper (hydra_plugins/rnnexp_sweepers) passes each job its trial number as `trial=N`; the job
finds the study through the sweeper's own config (storage, study_name, pruner). A trial the pruner
stops ends training after that epoch, is not tested, and is recorded `pruned`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

log = logging.getLogger("rnnexp")


def storage_url(storage: Any) -> Any:
    """A SQLite URL with an absolute path (`sqlite:///rel` is relative to the working directory of
    whichever process opens it), its folder created: SQLite does not create it."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:///") or storage == "sqlite:///:memory:":
        return storage
    path = Path(storage.removeprefix("sqlite:///")).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


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
    return TrialReport(trial, metric)


class TrialReport(pl.Callback):
    """After every validation: the metric the study optimizes to the trial, and training stopped
    (after this epoch) when the pruner says the trial has fallen behind."""

    def __init__(self, trial, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.pruned_at: int | None = None  # the epoch after which the pruner stopped the trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or self.pruned_at is not None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True
            epoch = trainer.current_epoch
            log.info(f"trial {self.trial.number} pruned after epoch {epoch}: {self.monitor}={value:.4f}")


def dropout_between_layers(cfg: DictConfig, trial) -> None:
    """A search's `custom_search_space`: model.dropout only for stacked models (dropout acts between
    layers, and check() refuses it with one layer)."""
    if trial.params.get("model.layers", cfg.model.layers) > 1:
        trial.suggest_float("model.dropout", 0.0, 0.5)
