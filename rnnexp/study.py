"""A job's side of an Optuna search (`-m hparams_search=optuna`): its trial in the study, the
validation result of every epoch reported to it, and the pruner's verdict.

The sweeper (hydra_plugins/rnnexp_sweepers) passes each job its trial number as `trial=N`; the job
finds the study through the sweeper's own config (storage, study_name, pruner). A trial the pruner
stops ends training after that epoch, is not tested, and is recorded `pruned`.

Both sides open the study's storage with rnnexp.storage.open_storage and reach a trial through the
public methods of optuna.storages.BaseStorage, by the study's name and the trial's number.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from rnnexp.storage import open_storage, storage_errors, storage_url

log = logging.getLogger("rnnexp")


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
        storage = open_storage(storage_url(sweeper.storage))
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=instantiate(sweeper.pruner))
        trial = StudyTrial(study, storage, number)
        if trial.frozen().state.is_finished():  # a trial's run resumed after its search
            log.info(f"trial {number} of study {sweeper.study_name} has ended; this run no longer reports to it")
            return None
        trial.set_user_attr("run_dir", str(cfg.paths.run_dir))  # for the sweeper, should this job be killed
    metric = cfg.optimized_metric if str(cfg.optimized_metric).startswith("val/") else "val/acc"
    return TrialReport(trial, metric, sweeper.storage)


class StudyTrial:
    """A trial of a study, by number, through the storage's public methods (what optuna.trial.Trial
    does for the process that asked for it, for any process that opens the study)."""

    def __init__(self, study, storage, number: int):
        self.study, self.storage, self.number = study, storage, number
        study_id = storage.get_study_id_from_name(study.study_name)
        self.trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def frozen(self):
        return self.storage.get_trial(self.trial_id)

    def set_user_attr(self, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)

    def report(self, value: float, step: int) -> None:
        self.storage.set_trial_intermediate_value(self.trial_id, step, value)

    def should_prune(self) -> bool:
        return self.study.pruner.prune(self.study, self.frozen())


class TrialReport(pl.Callback):
    """After every validation: the metric the study optimizes to the trial, and training stopped
    (after this epoch) when the pruner says the trial has fallen behind."""

    def __init__(self, trial: StudyTrial, monitor: str, storage: Any = None):
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
