"""What the LightningModule logs of a training step, on one fixed batch."""

import copy
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import Logger

from rnnexp.models.classifier import SequenceClassifier
from rnnexp.module import ClassifierModule


class Recorder(Logger):
    """Keeps what is logged, by tag."""

    def __init__(self):
        super().__init__()
        self.logged: dict[str, list[tuple[int, float]]] = {}

    name, version = "recorder", 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        for tag, value in metrics.items():
            self.logged.setdefault(tag, []).append((step, value))


class OneStep:
    """One training step of one batch, as the DataModule hands it over (a list of batches)."""

    def __init__(self, x, y):
        self.batches = [(x, y)]

    def __iter__(self):
        yield self.batches

    def __len__(self):
        return 1


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_train_loss_is_plain_cross_entropy_and_the_smoothed_objective_is_what_is_optimized(smoothing):
    torch.manual_seed(0)
    model = SequenceClassifier(28, cell="gru", hidden_size=8)
    x, y = torch.rand(32, 28, 28), torch.randint(0, 10, (32,))
    before = copy.deepcopy(model)
    with torch.no_grad():
        logits = before(x)
    plain, smoothed = F.cross_entropy(logits, y).item(), F.cross_entropy(logits, y, label_smoothing=0.2).item()
    assert smoothed != pytest.approx(plain, rel=1e-3)  # the two differ: the test can tell them apart

    module = ClassifierModule(model, partial(torch.optim.SGD, lr=0.5), label_smoothing=smoothing)
    recorder = Recorder()
    trainer = pl.Trainer(max_steps=1, log_every_n_steps=1, logger=recorder, limit_val_batches=0,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, train_dataloaders=OneStep(x, y))

    assert recorder.logged["train/loss"] == [(0, pytest.approx(plain, rel=1e-6))]
    if smoothing:
        assert recorder.logged["train/objective"] == [(0, pytest.approx(smoothed, rel=1e-6))]
    else:
        assert "train/objective" not in recorder.logged
    # the step went down the objective's gradient: label smoothing is still what is optimized
    reference = torch.optim.SGD(before.parameters(), lr=0.5)
    F.cross_entropy(before(x), y, label_smoothing=smoothing).backward()
    reference.step()
    for trained, expected in zip(model.parameters(), before.parameters(), strict=True):
        torch.testing.assert_close(trained, expected)
