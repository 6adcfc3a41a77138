"""The LightningModule: loss, metrics and optimization around a plain classifier nn.Module."""

from __future__ import annotations

import inspect
from functools import partial

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy


class ClassifierModule(pl.LightningModule):
    """Cross-entropy training with accuracy for train, validation and test.

    Optimization is written out by hand (Lightning's manual optimization): one backward, optional
    gradient-norm clipping, one optimizer step and one scheduler step per batch, with no closure
    machinery in between. Training loss and accuracy accumulate on the device and are logged as
    means over each logging interval (`trainer.log_every_n_steps`), so there is no host-device
    sync on the other steps.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: partial,
        scheduler: partial | None = None,
        grad_clip: float | None = None,
        num_classes: int = 10,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.model, self.optimizer, self.scheduler, self.grad_clip = model, optimizer, scheduler, grad_clip
        acc = partial(MulticlassAccuracy, num_classes=num_classes, average="micro", validate_args=False)
        self.train_acc, self.val_acc, self.test_acc = acc(), acc(), acc()
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_fit_start(self) -> None:
        # TensorBoard's Custom Scalars tab: train and validation curves of a metric on one chart.
        if isinstance(self.logger, TensorBoardLogger):
            charts = {name: ["Multiline", [f"train/{name}", f"val/{name}"]] for name in ("loss", "acc")}
            self.logger.experiment.add_custom_scalars({"train vs val": charts})

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity-check pass

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), y)
        if self.global_step % self.trainer.log_every_n_steps == 0:  # the steps Lightning writes out
            self._log_train()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # A run measured in steps may end mid-epoch; asking to stop makes Lightning validate (and
        # checkpoint) those last steps too, rather than end without looking at them.
        if 0 < self.trainer.max_steps <= self.global_step:
            self.trainer.should_stop = True

    def _log_train(self) -> None:
        loss = self.train_loss.compute()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}: the run diverged; "
                "lower optimizer.lr or set grad_clip (e.g. grad_clip=1.0)"
            )
        self.log_dict({"train/loss": loss, "train/acc": self.train_acc.compute()}, prog_bar=True)
        self.train_loss.reset()
        self.train_acc.reset()

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
        self.val_acc_best.update(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer(params=self.parameters())
        if self.scheduler is None:
            return optimizer
        # Schedules run per optimizer step; their length comes from the trainer.
        needs = inspect.signature(self.scheduler.func).parameters
        length = {k: int(self.trainer.estimated_stepping_batches) for k in ("total_steps", "T_max") if k in needs}
        scheduler = self.scheduler(optimizer, **{k: v for k, v in length.items() if k not in self.scheduler.keywords})
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
