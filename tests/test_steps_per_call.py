"""Several optimizer steps per Lightning training step (steps_per_call) train exactly as one does:
the same batches, losses, logged curves, checkpoints and step counts."""

import json

import pytest
import torch
from conftest import ROOT, TINY, run_train, scalars
from hydra import compose, initialize_config_dir
from pytorch_lightning.callbacks import Callback

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
