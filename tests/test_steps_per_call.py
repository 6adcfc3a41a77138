"""Several optimizer steps per Lightning training step (steps_per_call) train exactly as one does:
the same batches, losses, logged curves, checkpoints and step counts."""

import json

import pytest
import torch
from conftest import ROOT, TINY, run_train, scalars
from hydra import compose, initialize_config_dir
from pytorch_lightning.callbacks import Callback

from rnnexp.errors import ConfigError
from rnnexp.module import ClassifierModule, Lean
from rnnexp.progress import StepBar
from rnnexp.train import build


def only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


# bf16-mixed: Lightning's autocast spans the whole training step; its later optimizer steps must still
# see the weights the earlier ones updated (Lightning opens it with the weight cache off).
# (a GRU: it runs in bfloat16 on any CPU, emulated where the CPU has no bfloat16 arithmetic; an LSTM does not)
@pytest.mark.parametrize("extra", [[], ["trainer.max_steps=25"], ["trainer.precision=bf16-mixed", "model=gru"]])
def test_steps_per_call_changes_nothing_but_speed(tmp_path, tiny_mnist, extra):
    runs = {}
    for k in (1, 4):  # 11 batches an epoch: training steps of 4, 4 and 3
        out = tmp_path / f"k{k}"
        result = run_train(*TINY, "model.dropout=0.2", "model.layers=2", f"steps_per_call={k}", *extra,
                           data=tiny_mnist, out=out)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        run = only((out / "runs").iterdir())
        runs[k] = (
            json.loads((run / "metrics.json").read_text()),
            scalars(run),
            torch.load(run / "checkpoints" / "last.ckpt", weights_only=False),
        )
    (m1, s1, c1), (m4, s4, c4) = runs[1], runs[4]
    assert m1["steps"] == m4["steps"] == (25 if "trainer.max_steps=25" in extra else 33)  # stops inside a step
    for key in ("test/acc", "test/loss", "val/acc_best", "val/loss", "train/loss"):
        assert m1[key] == m4[key], key
    assert s1 == s4  # every curve, step for step: train/* logged every 2 optimizer steps, val/* and test/*
    assert all(torch.equal(c1["state_dict"][k], c4["state_dict"][k]) for k in c1["state_dict"])


def built(tmp_path, tiny_mnist):
    """The DataModule, module and Trainer of a one-epoch tiny run, four batches a training step, no logger
    or callbacks."""
    overrides = [*TINY, f"data.root={tiny_mnist}", f"paths.run_dir={tmp_path}", "~logger", "~callbacks"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return build(compose("train", overrides=[*overrides, "trainer.max_epochs=1", "steps_per_call=4"]))


class CountsBackward(Callback):
    def __init__(self):
        self.calls = 0

    def on_after_backward(self, trainer, pl_module):
        self.calls += 1


def test_a_callback_on_the_backward_hooks_gets_lightnings_path_and_is_called_every_step(tmp_path, tiny_mnist):
    datamodule, module, trainer = built(tmp_path, tiny_mnist)
    counter = CountsBackward()
    trainer.callbacks.append(counter)
    lean = []
    module.on_train_start = lambda: (ClassifierModule.on_train_start(module), lean.append(module._lean))
    trainer.fit(module, datamodule=datamodule)
    assert lean == [None] and counter.calls == trainer.global_step == 11
    trainer.callbacks.remove(counter)
    assert isinstance(Lean.of(module), Lean)  # without it, the lean path


def test_the_progress_bar_counts_optimizer_steps(tmp_path, tiny_mnist):
    datamodule, module, trainer = built(tmp_path, tiny_mnist)
    bar = StepBar(refresh_rate=1)
    shown = []
    update = StepBar.on_train_batch_end

    def on_train_batch_end(*args):
        update(bar, *args)
        shown.append((bar.train_progress_bar.n, bar.train_progress_bar.total))

    bar.on_train_batch_end = on_train_batch_end
    trainer = type(trainer)(max_epochs=1, logger=False, callbacks=[bar], enable_checkpointing=False,
                            precision="32-true", enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    assert shown == [(4, 11), (8, 11), (11, 11)]  # 11 batches, 4 to a training step


class ValidatedAt(Callback):
    """The optimizer steps after which validation ran (the sanity check left out)."""

    def __init__(self):
        self.steps = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


def validated_at(tmp_path, tiny_mnist, steps_per_call, *overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"data.root={tiny_mnist}", f"paths.run_dir={tmp_path}", "~logger",
                                          "~callbacks", "trainer.max_epochs=2", f"steps_per_call={steps_per_call}",
                                          *overrides])  # fmt: skip
    datamodule, module, trainer = build(cfg)
    seen = ValidatedAt()
    trainer.callbacks.append(seen)
    trainer.fit(module, datamodule=datamodule)
    return seen.steps


# The tiny data have 11 training batches an epoch. Lightning's own meaning is what it does with one batch a
# training step; with ten, validation falls after the same batches.
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["+trainer.limit_train_batches=5"], [5, 10]),  # 5 batches an epoch, not 5 calls of ten (all 11)
        (["+trainer.val_check_interval=5", "+trainer.limit_train_batches=10"], [5, 10, 15, 20]),
        (["+trainer.val_check_interval=4"], [4, 8, 15, 19]),  # not at an epoch's end: Lightning's rule
        (["+trainer.val_check_interval=0.5"], [5, 10, 16, 21]),  # int(11 * 0.5) batches
        (["+trainer.val_check_interval=7", "+trainer.check_val_every_n_epoch=null"], [7, 14, 21]),  # across epochs
    ],
)
def test_val_check_interval_counts_batches_whatever_steps_per_call_is(tmp_path, tiny_mnist, overrides, expected):
    assert validated_at(tmp_path / "one", tiny_mnist, 1, *overrides) == expected  # Lightning's documented meaning
    assert validated_at(tmp_path / "ten", tiny_mnist, 10, *overrides) == expected


def test_val_check_interval_longer_than_an_epoch_is_refused_in_batches(tmp_path, tiny_mnist):
    with pytest.raises(ConfigError, match=r"trainer.val_check_interval=12: more than the 11 training batches"):
        validated_at(tmp_path, tiny_mnist, 10, "+trainer.val_check_interval=12")
