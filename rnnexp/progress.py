"""Training progress on the console: a redrawn bar on a terminal, one plain line per epoch elsewhere.

Where the output is not a terminal (CI, Slurm, a file), a redrawn bar leaves carriage returns and
hundreds of partial lines in the log; there, one line per epoch says the same.
"""

from __future__ import annotations

import logging
import sys
import time

from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

log = logging.getLogger("rnnexp")


def progress_bar(refresh_rate: int = 20) -> ProgressBar:
    """StepBar, redrawn about every `refresh_rate` steps, when standard output (where the bar draws)
    is a terminal; otherwise EpochLines. Choosing here, once, keeps the per-step hooks of the
    plain-output case Lightning's empty ones."""
    return StepBar(refresh_rate=refresh_rate) if sys.stdout.isatty() else EpochLines()


class StepBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting optimizer steps (batches) rather than Lightning's training
    steps, each of which takes `steps_per_call` of them: the epoch's total is its batches, and
    the count is the batches trained so far (the training batches' own position)."""

    @property
    def total_train_batches(self) -> int | float:
        loader = self.trainer.train_dataloader
        return getattr(loader, "steps", self.trainer.num_training_batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is None or not self.is_enabled:
            return
        n = min(getattr(trainer.train_dataloader, "position", batch_idx + 1), bar.total or float("inf"))
        if n - bar.n >= self.refresh_rate or n == bar.total:
            bar.n = n
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))


class EpochLines(ProgressBar):
    """One log line at the end of each training epoch, after its validation: epoch, step, the train
    and val metrics, seconds since training started. No per-step hooks; no carriage returns.

    (A ProgressBar subclass, so that Lightning does not add its own bar beside it.)
    """

    METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self._start, self._first_step = time.perf_counter(), 0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._start, self._first_step = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Nothing trained in this attempt: a resumed run ending the epoch its checkpoint was taken at the end of,
        # whose line the attempt that trained it printed.
        if not self.enabled or trainer.global_step == self._first_step:
            return
        epoch = f"epoch {trainer.current_epoch + 1}" + (f"/{trainer.max_epochs}" if trainer.max_epochs > 0 else "")
        step = f"step {trainer.global_step}" + (f"/{trainer.max_steps}" if trainer.max_steps > 0 else "")
        metrics = trainer.callback_metrics
        values = [f"{k} {float(metrics[k]):.4f}" for k in self.METRICS if k in metrics]
        log.info(", ".join([epoch, step, *values, f"{time.perf_counter() - self._start:.1f} s"]))
