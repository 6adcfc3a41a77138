"""Every config group option composes, passes the checks and builds its object; bad overrides are
rejected before anything trains, in one line that names the key."""

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import CONF, run_train
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnnexp.config import check
from rnnexp.data.datamodule import MnistSequenceDataModule
from rnnexp.models.classifier import SequenceClassifier
from rnnexp.module import ClassifierModule

GROUPS = ["data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(tmp_path, *overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"paths.run_dir={tmp_path}", *overrides])


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_passes_the_checks(tmp_path, group, option):
    cfg = composed(tmp_path, f"{group}={option}")
    check(cfg)
    assert cfg[group] is not None


def test_data_and_model_configs_build_what_they_name(tmp_path, tiny_mnist):
    cfg = composed(tmp_path, f"data.root={tiny_mnist}", "data.val_size=50")
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, MnistSequenceDataModule)
    datamodule.setup()
    assert [len(datamodule.splits[s][1]) for s in ("train", "val", "test")] == [350, 50, 100]
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape == (128, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    for cell in options("model"):
        model = instantiate(composed(tmp_path, f"model={cell}").model, input_size=28, num_classes=10)
        assert isinstance(model, SequenceClassifier) and model.core.mode.lower().startswith(cell)
        assert model(x).shape == (128, 10)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler_configs_run_the_whole_schedule(tmp_path, monkeypatch, optimizer, scheduler):
    cfg = composed(tmp_path, f"optimizer={optimizer}", f"scheduler={scheduler}")
    scheduler = instantiate(cfg.scheduler) if cfg.scheduler else None  # as rnnexp.train builds it
    module = ClassifierModule(SequenceClassifier(28, hidden_size=8), instantiate(cfg.optimizer), scheduler)
    monkeypatch.setattr(ClassifierModule, "trainer", SimpleNamespace(estimated_stepping_batches=100))
    setup = module.configure_optimizers()
    if scheduler is None:
        assert cfg.scheduler == {} and isinstance(setup, torch.optim.Optimizer)
        return
    opt, sched = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert type(opt).__name__.lower() == optimizer and opt.defaults["lr"] == cfg.optimizer.lr
    lrs = []
    for _ in range(100):  # the schedule's length was filled in from the trainer
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) <= cfg.optimizer.lr * 1.0001 and lrs[-1] < 0.01 * cfg.optimizer.lr


def test_schedule_too_short_for_one_cycle_says_so(tmp_path, monkeypatch):
    cfg = composed(tmp_path, "scheduler=onecycle")
    module = ClassifierModule(
        SequenceClassifier(28, hidden_size=8), instantiate(cfg.optimizer), instantiate(cfg.scheduler)
    )
    monkeypatch.setattr(ClassifierModule, "trainer", SimpleNamespace(estimated_stepping_batches=4))
    with pytest.raises(ValueError, match="a run of 4 steps is too short for OneCycleLR: .* scheduler=none"):
        module.configure_optimizers()


def test_trainer_logger_and_callback_configs_build(tmp_path):
    cfg = composed(tmp_path, "trainer=auto")
    callbacks = {name: instantiate(c) for name, c in cfg.callbacks.items()}
    assert callbacks["checkpoint"].monitor == "val/acc" and callbacks["checkpoint"].dirpath == str(
        tmp_path / "checkpoints"
    )
    logger = instantiate(cfg.logger)
    assert logger.log_dir.rstrip("/") == str(tmp_path)  # event files straight in the run folder
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=list(callbacks.values()))
    assert isinstance(trainer, pl.Trainer) and trainer.max_epochs == cfg.trainer.max_epochs
    assert composed(tmp_path, "trainer=gpu").trainer.accelerator == "gpu"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=transformer"], "model=transformer: no such option; choose one of gru, lstm, rnn"),
        (["model.layers=0"], "model.layers=0: must be an integer >= 1"),
        (["model.layers=abc"], "model.layers=abc: must be an integer >= 1"),
        (["model.hidden_size=-3"], "model.hidden_size=-3: must be an integer >= 1"),
        (["model.dropout=1.5"], "model.dropout=1.5: must be a number >= 0 and < 1"),
        (
            ["model.init=foo"],
            "model.init=foo: must be one of default, normal, xavier, orthogonal, he, variance_scaling",
        ),
        (["model=lstm", "model.nonlinearity=relu"], "model.nonlinearity=relu: only model.cell=rnn"),
        (["model=gru", "model.forget_bias=1.0"], "model.forget_bias=1.0: only model.cell=lstm"),
        (["model.hidden=3"], "Could not override 'model.hidden'"),
        (["optimizer.lr=-1"], "optimizer.lr=-1: must be a number > 0"),
        (["data.batch_size=0"], "data.batch_size=0: must be an integer >= 1"),
        (["-m", "trainer.devices=2"], "trainer.devices=2: multi-device training would relaunch the whole sweep"),
    ],
)
def test_bad_override_stops_before_training_with_one_line(tmp_path, tiny_mnist, overrides, message):
    result = run_train(*overrides, data=tiny_mnist, out=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("events.out.*"))
