"""The LightningModule: loss, metrics and optimization around a plain classifier nn.Module."""

from __future__ import annotations

import inspect
import logging
import math
from functools import partial

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from rnnexp.compat.lightning import PlainHookAttributes, optimizer_step_progress, set_steps_logged_at, trainer_of
from rnnexp.errors import ConfigError, Diverged

log = logging.getLogger("rnnexp")


def schedule(factory: partial, optimizer: torch.optim.Optimizer, steps: int):
    """A learning-rate schedule stepped once per optimizer step over a run of `steps` steps: the
    length goes in as the schedule calls it (OneCycleLR's total_steps, CosineAnnealingLR's T_max)."""
    needs = inspect.signature(factory.func).parameters
    length = {k: steps for k in ("total_steps", "T_max") if k in needs and k not in factory.keywords}
    try:
        return factory(optimizer, **length)
    except ZeroDivisionError:  # OneCycleLR's warm-up rounds to nothing on a few steps
        raise ConfigError(
            f"a run of {steps} steps is too short for {factory.func.__name__}: train longer, or use scheduler=none"
        ) from None


def cross_entropies(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective a training step optimizes and the loss it reports, from one log-softmax: the
    cross-entropy with `label_smoothing` (F.cross_entropy's, written out as torch computes it: the same
    value and gradient, bit for bit, in float32 and under bfloat16 autocast) and the plain
    cross-entropy, the quantity val/loss and test/loss measure. They are one tensor without smoothing."""
    logp = F.log_softmax(logits.float(), -1)  # float32 under autocast too, as F.cross_entropy computes it
    loss = F.nll_loss(logp, y)
    if not label_smoothing:
        return loss, loss
    uniform = -logp.sum(-1).mean() * (label_smoothing / logits.shape[-1])
    return (1 - label_smoothing) * loss + uniform, loss


class ClassifierModule(PlainHookAttributes, pl.LightningModule):
    """Cross-entropy training with accuracy for train, validation and test.

    `train/loss` is the plain cross-entropy, the quantity `val/loss` is, whatever `label_smoothing`
    is; with label smoothing the objective optimized (larger: it also pays for confident logits) is
    logged apart, as `train/objective`.

    The training step is kept lean (benchmarks/train_speed.py measures it against a plain loop).
    Lightning's fixed cost per training step (hooks, progress; README "Speed") is paid once for
    several optimizer steps: each training step gets a list of batches (`steps_per_call`, cut by
    the DataModule) and takes one optimizer step for each, stopping at trainer.max_steps exactly.
    Optimization is written out by hand (Lightning's manual optimization: one backward, optional
    gradient-norm clipping, one optimizer and one scheduler step, no closure machinery). Where
    nothing needs Lightning's wrappers around backward and the optimizer step (one device, no
    float16 loss scaling, no callback using the backward or optimizer-step hooks) they are skipped
    too: the raw optimizer steps, and Lightning's step counter is advanced as its wrapper would
    (see `Lean`). Training
    loss and accuracy accumulate on the device and are logged, with the learning rate, as means
    over each logging interval (`trainer.log_every_n_steps`), so no other step syncs with the host.
    Lightning calls every callback on every step, so the module logs the learning rate itself rather
    than adding a callback for it (rnnexp.train says the model's size in one line).

    Everything a resumed run needs to continue exactly is in its checkpoints: besides the weights
    and optimizer state that Lightning saves, the best validation accuracy so far and the running
    training sums of the unfinished logging interval (on_save_checkpoint / on_load_checkpoint).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: partial,
        scheduler: partial | None = None,
        grad_clip: float | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model, self.optimizer, self.scheduler, self.grad_clip = model, optimizer, scheduler, grad_clip
        self.label_smoothing = label_smoothing
        self._lean: Lean | None = None  # set in on_train_start where the lean path applies
        acc = partial(MulticlassAccuracy, num_classes=num_classes, average="micro", validate_args=False)
        self.val_acc, self.test_acc = acc(), acc()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best: float | None = None  # over the validations of this run, resumed or not
        # Training loss and accuracy: plain running sums on the device, read once per logging
        # interval. (A torchmetrics update costs ~40 us a step; these cost ~10 us, and no sync.)
        # Not a buffer: DDP would overwrite every process's sums with rank 0's before each step.
        self.train_sums = torch.zeros(3)  # loss sum, correct, objective sum; moved to the device in on_fit_start
        self._train_steps = self._train_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_fit_start(self) -> None:
        self.train_sums = self.train_sums.to(self.device)
        # TensorBoard's Custom Scalars tab: train and validation curves of a metric on one chart.
        if isinstance(self.logger, TensorBoardLogger):
            charts = {name: ["Multiline", [f"train/{name}", f"val/{name}"]] for name in ("loss", "acc")}
            self.logger.experiment.add_custom_scalars({"train vs val": charts})

    def on_train_start(self) -> None:
        self._lean = Lean.of(self)

    def training_step(self, batches, batch_idx):
        max_steps, every = self.trainer.max_steps, self.trainer.log_every_n_steps
        scheduler = self.lr_schedulers()
        for x, y in batches:  # one optimizer step each (steps_per_call)
            if 0 < max_steps <= self.global_step:
                break
            logits = self.model(x)
            objective, loss = cross_entropies(logits, y, self.label_smoothing)
            if self._lean is not None:
                self._lean.step(objective)
            else:
                self._step(objective)
            if scheduler is not None:
                scheduler.step()
            sums = self.train_sums
            sums[0] += loss.detach()
            sums[1] += (logits.detach().argmax(-1) == y).sum()
            sums[2] += objective.detach()
            self._train_steps, self._train_seen = self._train_steps + 1, self._train_seen + len(y)
            if self.global_step % every == 0:
                self._log_train()
        # Lightning logs validation and test metrics at its count of training steps, which it increments
        # after this one's hooks and checkpoints, where each took steps_per_call optimizer steps: keep that
        # count the optimizer steps', so that every curve shares one step axis with train/*.
        set_steps_logged_at(self.trainer, self.global_step - 1)

    def _step(self, loss: torch.Tensor) -> None:
        """An optimizer step through Lightning's wrappers: its hooks, loss scaling, strategies."""
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # A run measured in steps may end mid-epoch; asking to stop makes Lightning validate (and
        # checkpoint) those last steps too, rather than end without looking at them.
        if 0 < self.trainer.max_steps <= self.global_step:
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        if self._train_steps:  # a NaN is caught at each epoch's end too, however short the run
            loss_sum, _, _, steps, _ = self._train_totals()
            self._check_finite(loss_sum / steps)

    def _train_totals(self) -> list[float]:
        """Loss sum, correct, objective sum, steps and examples of the logging interval so far, summed over the
        processes with several devices (one small all-reduce per interval, on every process at
        the same step), so that the curve and the divergence check are the run's, on every rank."""
        totals = torch.cat([self.train_sums, self.train_sums.new_tensor([self._train_steps, self._train_seen])])
        if (trainer := trainer_of(self)) is not None and trainer.world_size > 1:
            totals = trainer.strategy.reduce(totals, reduce_op="sum")
        return totals.tolist()  # the interval's one host-device sync

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise Diverged(
                f"training loss is {loss} at step {self.global_step}: the run diverged; "
                "lower optimizer.lr or set grad_clip (e.g. grad_clip=1.0)"
            )

    def _log_train(self) -> None:
        loss_sum, correct, objective_sum, steps, seen = self._train_totals()
        loss, acc = loss_sum / steps, correct / seen
        self._check_finite(loss)
        metrics = {"train/loss": loss, "train/acc": acc, "train/lr": self.optimizers().param_groups[0]["lr"]}
        if self.label_smoothing:
            metrics["train/objective"] = objective_sum / steps
        # Written now, not at Lightning's step end, so that a checkpoint taken after this step finds
        # it flushed (see on_save_checkpoint). The step is the one Lightning gives the validation
        # metrics of the same batch: the batches stepped before this one.
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=self.global_step - 1)
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, logger=False)
        self.train_sums.zero_()
        self._train_steps = self._train_seen = 0

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        logits = self.model(x)
        loss_metric, acc_metric = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        loss_metric.update(F.cross_entropy(logits, y), weight=len(y))
        acc_metric.update(logits, y)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True)
        self.log(f"{stage}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        acc = self.val_acc.compute().item()
        self.val_acc_best = acc if self.val_acc_best is None else max(self.val_acc_best, acc)
        self.log("val/acc_best", self.val_acc_best, sync_dist=True)  # the same on every process: val_acc is synced

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every process saves (Lightning writes rank 0's): the sums of all of them, which a resumed
        # run gives back to rank 0 alone.
        loss_sum, correct, objective_sum, steps, seen = self._train_totals()
        checkpoint["module_state"] = {
            "val_acc_best": self.val_acc_best,
            "train_sums": [loss_sum, correct, objective_sum],
            "train_steps": int(steps),
            "train_seen": int(seen),
        }
        if self.logger is not None:  # what was logged up to this checkpoint is on disk with it
            self.logger.save()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("module_state")
        if state is None:  # written by another program: start the sums and the best afresh
            return
        self.val_acc_best = state["val_acc_best"]
        # Every process steps alike: each gets its own count of the interval's steps back, so that all of them
        # take part in the same reductions (on_train_epoch_end reduces only where there are steps). The saved
        # sums are all the processes', given back to rank 0 alone.
        trainer = trainer_of(self)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        self._train_steps = state["train_steps"] // world
        if rank == 0:
            sums = state["train_sums"]
            if len(sums) == 2:  # written before train/objective: its loss sum was the objective's
                sums = [sums[0], sums[1], sums[0]]
            self.train_sums.copy_(torch.tensor(sums))
            self._train_seen = state["train_seen"]

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer(params=self.parameters())
        if self.scheduler is None:
            return optimizer
        scheduler = schedule(self.scheduler, optimizer, self.run_length())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def run_length(self) -> int:
        """Optimizer steps in the whole run: trainer.max_steps or max_epochs of the training
        batches, whichever ends first. (Trainer.estimated_stepping_batches would load the training
        batches before a resumed run restores its position in the epoch, which is then lost.)"""
        trainer = self.trainer
        lengths = [trainer.max_steps] if trainer.max_steps >= 0 else []
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            lengths.append(trainer.max_epochs * trainer.datamodule.train_dataloader().steps)
        if not lengths:
            raise ConfigError("a learning-rate schedule needs trainer.max_steps or trainer.max_epochs to be set")
        return min(lengths)


# Lightning hooks that the lean path would skip: a callback or module that implements one gets
# Lightning's path (ClassifierModule._step).
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def implements_step_hooks(obj: object, base: type) -> bool:
    """Whether `obj`'s class defines one of STEP_HOOKS anew rather than inheriting `base`'s (which does
    nothing)."""
    return any(getattr(type(obj), hook, None) is not getattr(base, hook) for hook in STEP_HOOKS)


class Lean:
    """An optimizer step without Lightning's wrappers: zero_grad, backward, clipping and the raw
    optimizer's step, as a plain loop writes them. Lightning's own path adds hooks (on_before_backward,
    on_after_backward, on_before_optimizer_step on the module and every callback) and the precision
    plugin's handling: with eight batches per training step, 1.07x the plain loop's time with them
    and 1.04x without, LSTM-128 measured on an Intel Xeon. `of` gives one only where skipping them
    changes nothing: one process, a precision without loss scaling, and no callback or module hook
    among STEP_HOOKS.

    Lightning counts optimizer steps (trainer.global_step, which max_steps, checkpoints and resume
    read) in its wrapper's step; `step` advances the same counter."""

    def __init__(self, module: ClassifierModule):
        self.optimizer = module.optimizers().optimizer  # the torch optimizer inside Lightning's wrapper
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.grad_clip = module.grad_clip
        self.progress = optimizer_step_progress(module.trainer)

    @classmethod
    def of(cls, module: ClassifierModule) -> Lean | None:
        trainer = module.trainer
        plugin = trainer.precision_plugin
        if type(trainer.strategy) is not SingleDeviceStrategy:
            return None
        if type(plugin) not in (Precision, MixedPrecision, HalfPrecision, DoublePrecision):
            return None
        if getattr(plugin, "scaler", None) is not None:  # float16: Lightning scales the loss
            return None
        if implements_step_hooks(module, pl.LightningModule):
            return None
        if any(implements_step_hooks(callback, Callback) for callback in trainer.callbacks):
            return None
        return cls(module)

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.progress.increment_ready()
        self.optimizer.step()
        self.progress.increment_completed()
