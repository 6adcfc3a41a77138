"""pytorch-lightning's internals rnnexp relies on, written for pytorch-lightning 2.6 (2.6.6): its
loops' progress counters and checkpoint layout, and its signal connector. Each has no public API."""

from __future__ import annotations

import pytorch_lightning as pl

VERSION = "2.6"  # what these were written and tested for (pyproject caps the range)


def set_steps_logged_at(trainer: pl.Trainer, step: int) -> None:
    """The step Lightning logs validation and test metrics at (its count of batches that stepped:
    `fit_loop.epoch_loop._batches_that_stepped`), kept equal to the optimizer steps when a training
    step takes several of them."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = step


def steps_logged_at(checkpoint: dict) -> int:
    """That count as a checkpoint saved it (its `loops` state); KeyError where it holds none."""
    return checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]


def optimizer_step_progress(trainer: pl.Trainer):
    """The counter behind trainer.global_step under manual optimization, which an optimizer step taken
    around Lightning's wrapper must advance itself (`increment_ready`, `increment_completed`)."""
    return trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress


def is_last_batch(trainer: pl.Trainer) -> bool:
    """Whether the training batch that just ended is its epoch's last (Lightning validates after it)."""
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def keep_own_signal_handlers(trainer: pl.Trainer) -> None:
    """Lightning installs its own SIGTERM handler when fit starts (its signal connector); with several
    processes it broadcasts from inside the handler, which deadlocks DDP when the other ranks are in
    another collective. This keeps the handlers rnnexp installed."""
    trainer._signal_connector.register_signal_handlers = lambda: None


def trainer_of(module: pl.LightningModule) -> pl.Trainer | None:
    """The module's trainer, None where it is not attached (the public property raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None
