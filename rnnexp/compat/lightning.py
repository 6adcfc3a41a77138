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


def precision_values() -> list:
    """Every value `Trainer(precision=...)` takes: lightning_fabric's `_PRECISION_INPUT` Literals.
    rnnexp.settings keeps a copy (PRECISIONS) so that checking a config imports no torch;
    tests/test_compat.py holds the two equal."""
    from typing import get_args

    from pytorch_lightning.trainer.trainer import _PRECISION_INPUT

    return [value for literal in get_args(_PRECISION_INPUT) for value in get_args(literal)]


def raised_by_lightning(err: BaseException) -> bool:
    """Whether the innermost frame of `err` is in Lightning's packages: Lightning refuses a setting it
    cannot use with a plain ValueError (at fit time too), which no type tells from a bug of ours."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return "pytorch_lightning" in filename or "lightning_fabric" in filename


class PlainHookAttributes:
    """A LightningModule mixin: Lightning sets the module's `_current_fx_name` around every hook, some
    30 times a step, and nn.Module.__setattr__ searches parameters, buffers and submodules each time.
    An existing plain attribute given a plain value ends up in __dict__ either way: put it there
    directly (tests/test_compat.py checks that Lightning still sets that attribute so)."""

    def __setattr__(self, name: str, value) -> None:
        import torch

        if name in self.__dict__ and not isinstance(value, (torch.Tensor, torch.nn.Module)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
