"""Training progress on the console: one kept line per epoch, and on a terminal a bar redrawn in between.

Where the output is not a terminal (CI, Slurm, a file), a redrawn bar leaves carriage returns and
hundreds of partial lines in the log; there, the epoch lines alone say the same. On a terminal the
bar shows the epoch under way and is replaced, at the epoch's end, by its line, so that the history
stays on screen (and in train.log) and the finished bar is not left behind.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time

from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar
from tqdm import tqdm as Tqdm  # tqdm's own class (Lightning's subclass lives in a module it does not export)
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("rnnexp")


def progress_bar(refresh_rate: int = 20) -> ProgressBar:
    """StepBar, redrawn about every `refresh_rate` steps, when standard output (where the bar draws)
    is a terminal; otherwise EpochLines. Choosing here, once, keeps the per-step hooks of the
    plain-output case Lightning's empty ones."""
    return StepBar(refresh_rate=refresh_rate) if sys.stdout.isatty() else EpochLines()


def epoch_of(trainer) -> str:
    """`epoch N/M`: the epoch under way counted from 1, of trainer.max_epochs where there is one (not in a
    run measured in steps alone)."""
    total = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
    return f"epoch {trainer.current_epoch + 1}" + (f"/{total}" if total else "")


class EpochLog:
    """One log line at the end of each training epoch, after its validation: epoch, step, the train
    and val metrics, seconds since training started (a mixin of both progress callbacks)."""

    METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._start, self._first_step = time.perf_counter(), trainer.global_step

    def log_epoch(self, trainer) -> None:
        # Nothing trained in this attempt: a resumed run ending the epoch its checkpoint was taken at the end of,
        # whose line the attempt that trained it printed.
        if trainer.global_step == self._first_step:
            return
        step = f"step {trainer.global_step}" + (f"/{trainer.max_steps}" if trainer.max_steps > 0 else "")
        metrics = trainer.callback_metrics
        values = [f"{k} {float(metrics[k]):.4f}" for k in self.METRICS if k in metrics]
        log.info(", ".join([epoch_of(trainer), step, *values, f"{time.perf_counter() - self._start:.1f} s"]))


class StepBar(EpochLog, TQDMProgressBar):
    """Lightning's TQDM bar, within 80 columns: `epoch N/M`, the epoch's batches trained of its total,
    time spent and left, then the latest training loss and accuracy (of the last logging interval)
    and validation accuracy under short names, at the precision they carry. It counts optimizer
    steps (batches) rather than Lightning's training steps, each of which takes `steps_per_call` of
    them. At each epoch's end the bar gives way to the epoch's line (EpochLog); after the last
    it is erased, not left beside that line. While it trains, the console's log lines (the run's:
    a stop signal's notice, say) are written through tqdm, which clears the bar, writes the line and
    redraws the bar below it, rather than after the bar on its line."""

    # Lightning's BAR_FORMAT less the percentage (the bar and the count say it) and the rate (the time left
    # says it), so that the metrics fit. Only the training bar's: validation and test keep Lightning's.
    TRAIN_FORMAT = "{desc} |{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
    # logged name: (shown name, format): a loss to 3 significant digits; a training accuracy over a logging
    # interval of batches to 3 decimals; the validation accuracy, over thousands of images, to 4 (as the log)
    SHOWN = {"train/loss": ("loss", ".3g"), "train/acc": ("acc", ".3f"), "val/acc": ("val/acc", ".4f")}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._console = contextlib.ExitStack()  # the console's log lines through tqdm while training

    @property
    def total_train_batches(self) -> int | float:
        loader = self.trainer.train_dataloader
        return getattr(loader, "steps", self.trainer.num_training_batches)

    def init_train_tqdm(self) -> Tqdm:
        # leave=False: closed after training, the bar is erased (the last epoch's line says what it said)
        return Tqdm(
            desc=self.train_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=False,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.TRAIN_FORMAT,
        )

    def get_metrics(self, trainer, pl_module) -> dict[str, str]:
        """SHOWN's metrics that have been logged, formatted; not Lightning's v_num (the logger's version)."""
        metrics = trainer.progress_bar_metrics
        return {name: format(float(metrics[key]), spec) for key, (name, spec) in self.SHOWN.items() if key in metrics}

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        console = [h for h in logging.root.handlers if getattr(h, "stream", None) in (sys.stdout, sys.stderr)]
        if self.is_enabled and console:  # (with none, tqdm's redirect would add one)
            self._console.enter_context(logging_redirect_tqdm(tqdm_class=Tqdm))

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self._console.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        # A stopped or failed run: the bars are erased (Lightning leaves them drawn), so that the run's last
        # lines (where it stopped, what to do) start lines of their own
        self._console.close()
        for bar in ("val_progress_bar", "train_progress_bar"):
            with contextlib.suppress(TypeError):  # Lightning's answer for a bar not made yet
                getattr(self, bar).close()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # Lightning's, but the bar redrawn once, with this epoch's name (Lightning's is `Epoch <from 0>`)
        total = self.total_train_batches
        self.train_progress_bar.set_description_str(epoch_of(trainer), refresh=False)
        self.train_progress_bar.reset(total=total if math.isfinite(total) else None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is None or not self.is_enabled:
            return
        n = min(getattr(trainer.train_dataloader, "position", batch_idx + 1), bar.total or float("inf"))
        if n - bar.n >= self.refresh_rate or n == bar.total:
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Not Lightning's, which redraws the bar with its postfix: the epoch's line is printed in the bar's
        # place (tqdm clears the bar for it) and the bar, redrawn below it, is cleared; the next epoch's
        # bar draws there. A line after training (Lightning's `Trainer.fit` stopped) starts a line of its own.
        if not self.is_enabled:
            return
        self.train_progress_bar.clear()  # where no console log handler goes through tqdm
        self.log_epoch(trainer)
        self.train_progress_bar.clear()


class EpochLines(EpochLog, ProgressBar):
    """The epoch lines alone (EpochLog). No per-step hooks; no carriage returns.

    (A ProgressBar subclass, so that Lightning does not add its own bar beside it.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self._start, self._first_step = time.perf_counter(), 0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.enabled:
            self.log_epoch(trainer)
