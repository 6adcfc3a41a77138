"""Every config group option composes, passes the checks and builds its object; bad overrides are
rejected before anything trains, in one line that names the key."""

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import CONF, ROOT, TINY, cli, run_train
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from rnnexp import settings
from rnnexp.config import ConfigError, check, null_group
from rnnexp.data.datamodule import SequenceDataModule
from rnnexp.data.datasets import DATASETS, FASHION_MNIST
from rnnexp.models.cells import CELLS as STEPWISE
from rnnexp.models.classifier import SequenceClassifier
from rnnexp.module import ClassifierModule
from rnnexp.settings import BASES, CELLS, RULES, SETTINGS, STEPWISE_CELLS

MODELS = "cornn, gru, indrnn, lem, lnlstm, lstm, lstm_peephole, lstm_stepwise, rnn"  # conf/model/'s options
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
    own = OmegaConf.load(CONF / group / f"{option}.yaml")  # what the option file itself sets is what was composed
    own.pop("defaults", None)
    for key in own:
        if not OmegaConf.is_interpolation(own, key):
            assert OmegaConf.to_container(cfg[group])[key] == OmegaConf.to_container(own)[key], key


def test_data_and_model_configs_build_what_they_name(tmp_path, tiny_mnist):
    cfg = composed(tmp_path, f"data.root={tiny_mnist}", "data.val_size=50")
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, SequenceDataModule)
    datamodule.setup()
    assert [len(datamodule.splits[s][1]) for s in ("train", "val", "test")] == [350, 50, 100]
    [(x, y)] = next(iter(datamodule.train_dataloader()))  # a training step's batches: one (steps_per_call=1)
    assert x.shape == (128, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    for cell in options("model"):
        model = instantiate(composed(tmp_path, f"model={cell}").model, input_size=28, num_classes=10)
        assert isinstance(model, SequenceClassifier)
        fused = cell in CELLS
        assert model.core.mode.lower().startswith(cell) if fused else isinstance(model.core.cells[0], STEPWISE[cell])
        assert model(x).shape == (128, 10)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizer_and_scheduler_configs_run_the_whole_schedule(tmp_path, monkeypatch, optimizer, scheduler):
    cfg = composed(tmp_path, f"optimizer={optimizer}", f"scheduler={scheduler}")
    scheduler = instantiate(cfg.scheduler) if cfg.scheduler else None  # as rnnexp.train builds it
    module = ClassifierModule(SequenceClassifier(28, hidden_size=8), instantiate(cfg.optimizer), scheduler)
    monkeypatch.setattr(ClassifierModule, "run_length", lambda self: 100)
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
    monkeypatch.setattr(ClassifierModule, "run_length", lambda self: 4)
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
    assert cfg.trainer.precision == "auto"  # rnnexp.train.build resolves it (rnnexp.precision) before the Trainer
    trainer = instantiate(cfg.trainer, precision="32-true", logger=logger, callbacks=list(callbacks.values()))
    assert isinstance(trainer, pl.Trainer) and trainer.max_epochs == cfg.trainer.max_epochs
    assert composed(tmp_path, "trainer=gpu").trainer.accelerator == "gpu"


@pytest.mark.parametrize(
    "trainer, gpus", [("trainer=cpu", None), ("trainer=auto", None), ("trainer=gpu", 1), ("trainer=ddp", -1)]
)
def test_the_slurm_preset_asks_for_gpus_only_where_the_trainer_trains_on_them(tmp_path, trainer, gpus):
    # a partition without GPUs refuses any --gpus-per-node: the README's CPU command must not ask for one
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", trainer], return_hydra_config=True)
    assert cfg.hydra.launcher.gpus_per_node == gpus
    assert cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=transformer"], f"model=transformer: no such option; choose one of {MODELS}"),
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
        # a near miss of a real key or group says which, instead of Hydra's advice to add it with +
        (["model.hidden=3"], "model.hidden: not a setting of model (SequenceClassifier); did you mean model.hidden_"),
        (["+optimzer=sgd"], "optimzer: not a setting of rnnexp.train; did you mean optimizer=sgd?"),
        (["model=lsmt"], "lstm_peephole, lstm_stepwise, rnn; did you mean model=lstm?"),
        # short names that difflib scores low: two letters swapped, another case
        (
            ["optimizer=sdg"],
            "optimizer=sdg: no such option; choose one of adam, adamw, rmsprop, sgd; did you mean optimizer=sgd?",
        ),
        (["trainer=cup"], "trainer=cup: no such option; choose one of auto, cpu, ddp, gpu; did you mean trainer=cpu?"),
        (["model=LSTM"], "lstm_peephole, lstm_stepwise, rnn; did you mean model=lstm?"),
        # a group of Hydra's (was: "not a setting of rnnexp.train", with the run's settings)
        (["hydra/launchr=parallel"], "hydra/launchr: no such group; did you mean hydra/launcher=parallel?"),
        (
            ["-m", "optimzer=sgd,adam"],
            "job 0 (optimzer=sgd): optimzer: not a setting of rnnexp.train; did you mean optimizer=sgd?",
        ),
        # what a sweep alone does, asked of a single run; the settings of a sweep that no job holds
        (["hparams_search=optuna"], "hparams_search=optuna: a search runs its trials as a sweep, which needs -m"),
        (
            ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=0", "seed=1,2"],
            "hydra.launcher.n_jobs=0: must be an integer >= 1 (the jobs run at once), or -1 for one per core",
        ),
        (["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=-1"], "hydra.sweeper.n_trials=-1: must be an integer"),
        (["optimizer.lr=-1"], "optimizer.lr=-1: must be a finite number > 0"),
        (["optimizer.lr=inf"], "optimizer.lr=inf: must be a finite number > 0"),
        (["data.batch_size=0"], "data.batch_size=0: must be an integer >= 1"),
        (["test=maybe"], "test=maybe: must be true or false"),
        (["trainer.precision=bogus"], "trainer.precision=bogus: must be one of transformer-engine"),
        (["+model.foo=1"], "model.foo: not a setting of model (SequenceClassifier); the settings are: cell,"),
        (["scheduler=null"], "scheduler=null: a config group takes the name of one of its options, not null; "),
        (["logger=null"], "logger=null: a config group takes the name of one of its options, not null; "),
        (
            ["-m", "hydra/launcher=joblib", "trainer.devices=2"],
            "trainer.devices=2: hydra/launcher=joblib runs jobs in worker processes",
        ),
        (["trainer=ddp", "trainer.accelerator=cpu"], "trainer.devices=-1: on CPU it is the number of processes"),
        (
            ["-m", "hydra/launcher=slurm", "trainer=ddp", "seed=1,2"],
            "trainer.devices=-1: on Slurm it is the number of devices per job",
        ),
        (["trainer=ddp", "trainer.strategy=ddp_spawn"], "trainer.strategy=ddp_spawn: processes started this way"),
    ],
)
def test_bad_override_stops_before_training_with_one_line(tmp_path, tiny_mnist, overrides, message):
    result = run_train(*overrides, data=tiny_mnist, out=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("events.out.*"))


# Values that passed the checks and then failed in torch or Lightning, or silently did something else.
@pytest.mark.parametrize(
    "overrides, message",
    [
        # numbers: finite, in range
        (["optimizer.lr=nan"], "optimizer.lr=nan: must be a finite number > 0"),
        (["optimizer.weight_decay=inf"], "optimizer.weight_decay=inf: must be a finite number >= 0"),
        (["grad_clip=inf"], "grad_clip=inf: must be null or a finite number > 0"),
        (["model.dropout=nan"], "model.dropout=nan: must be a number >= 0 and < 1"),
        (["model.forget_bias=-inf"], "model.forget_bias=-inf: must be a finite number"),
        (["scheduler.pct_start=nan"], "scheduler.pct_start=nan: must be a number > 0 and < 1"),
        (["scheduler=cosine", "scheduler.eta_min=inf"], "scheduler.eta_min=inf: must be a finite number >= 0"),
        # booleans
        (["data.download=maybe"], "data.download=maybe: must be true or false"),
        (["model.bidirectional=1"], "model.bidirectional=1: must be true or false"),
        (["trainer.deterministic=maybe"], "trainer.deterministic=maybe: must be true, false, warn or null"),
        (["trainer.enable_model_summary=maybe"], "trainer.enable_model_summary=maybe: must be true, false or null"),
        (["+trainer.enable_progress_bar=maybe"], "trainer.enable_progress_bar=maybe: must be true, false or null"),
        (["logger.default_hp_metric=maybe"], "logger.default_hp_metric=maybe: must be true or false"),
        (["callbacks.samples.count=abc"], "callbacks.samples.count=abc: must be an integer >= 1"),
        (["callbacks.progress_bar.refresh_rate=-1"], "callbacks.progress_bar.refresh_rate=-1: must be an integer >= 1"),
        (["callbacks.checkpoint.enable_version_counter=maybe"], "enable_version_counter=maybe: must be"),
        # optimizers
        (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer.momentum=-1: must be a finite number >= 0"),
        (["optimizer=sgd", "+optimizer.dampening=2"], "optimizer.dampening=2: must be a number >= 0 and <= 1"),
        (
            ["optimizer=sgd", "+optimizer.nesterov=true", "optimizer.momentum=0"],
            "optimizer.nesterov=true: Nesterov momentum needs optimizer.momentum > 0 and optimizer.dampening=0",
        ),
        (["optimizer=rmsprop", "+optimizer.alpha=1.0"], "optimizer.alpha=1.0: must be a number >= 0 and < 1"),
        (["optimizer=rmsprop", "+optimizer.centered=maybe"], "optimizer.centered=maybe: must be true or false"),
        (["experiment=simple_rnn_relu", "optimizer.eps=0"], "optimizer.eps=0: must be a finite number > 0"),
        (["experiment=simple_rnn_relu", "optimizer.eps=inf"], "optimizer.eps=inf: must be a finite number > 0"),
        (["+optimizer.betas=[0.9,1.0]"], "optimizer.betas=[0.9, 1.0]: must be two numbers >= 0 and < 1"),
        (["+optimizer.amsgrad=maybe"], "optimizer.amsgrad=maybe: must be true or false"),
        # seed_everything's range
        (["seed=99999999999"], "seed=99999999999: must be an integer >= 0 and <= 4294967295"),
        (["seed=-1"], "seed=-1: must be an integer >= 0 and <= 4294967295"),
        (["seed=true"], "seed=true: must be an integer"),
        # Lightning's precisions
        (["trainer.precision=32.0"], "trainer.precision=32.0: must be one of"),
        (["trainer.precision=true"], "trainer.precision=true: must be one of"),
        # a schedule needs a run of known length
        (["trainer.max_epochs=-1"], "trainer.max_epochs=-1: with trainer.max_steps=-1 too the run has no set length"),
        (["scheduler=cosine", "trainer.max_epochs=-1"], "set trainer.max_epochs or trainer.max_steps, or scheduler="),
        (["trainer.max_epochs=true"], "trainer.max_epochs=true: must be an integer >= 1, or -1"),
        # what a run returns to a sweeper
        (["optimized_metric=foo"], "optimized_metric=foo: must be one of val/acc_best, val/acc, val/loss, train/loss"),
        (
            ["optimized_metric=test/acc", "test=false"],
            "optimized_metric=test/acc: a run with test=false has no test metrics; set test=true or choose one of",
        ),
        # keys the object does not take
        (["+model.num_classes=5"], "model.num_classes: not a setting of model (SequenceClassifier); the settings"),
        (["+optimizer.foo=1"], "optimizer.foo: not a setting of optimizer (Adam); the settings are: lr, betas,"),
        (["+optimizer.momentum=0.9"], "optimizer.momentum: not a setting of optimizer (Adam)"),
        (["optimizer=sgd", "+optimizer.alpha=0.9"], "optimizer.alpha: not a setting of optimizer (SGD)"),
        (["+data.foo=1"], "data.foo: not a setting of data (SequenceDataModule); the settings are: dataset, root,"),
        (["+trainer.foo=1"], "trainer.foo: not a setting of trainer (Trainer); the settings are: accelerator,"),
        (["+trainer.logger=false"], "trainer.logger: not a setting of trainer (Trainer)"),  # the logger group's
        # what Lightning refuses under manual optimization
        (["trainer.gradient_clip_val=0.5"], "trainer.gradient_clip_val=0.5: Lightning's clipping does not work"),
        (["trainer.gradient_clip_val=0.5"], "use grad_clip=0.5"),
        (
            ["trainer.accumulate_grad_batches=4"],
            "trainer.accumulate_grad_batches=4: gradient accumulation is not supported",
        ),
        (["trainer.accumulate_grad_batches=4"], "use a larger data.batch_size instead"),
        (["+trainer.overfit_batches=5"], "trainer.overfit_batches=5: not supported"),
        (["+trainer.overfit_batches=0.1"], "use trainer.limit_train_batches"),
        # groups a run cannot do without
        (["~model"], f"model: none chosen; choose one of {MODELS} (model=<option>)"),
        (["~optimizer"], "optimizer: none chosen; choose one of adam, adamw, rmsprop, sgd"),
        (["data.root=null"], "data.root=null: must be a folder"),
        (["data.root=''"], "data.root='': must be a folder"),
        (["trainer.max_steps='\n'"], r"trainer.max_steps='\n': must be an integer >= 1, or -1"),
        # OmegaConf's `???` (no value) and interpolations that do not resolve: named, not skipped or raised
        (["seed=???"], "seed=???: no value given; set seed=<value>, an integer >= 0"),
        (["model.hidden_size=${model.nope}"], "model.hidden_size: Interpolation key 'model.nope' not found"),
        # data sets and views
        (["data.dataset=cifar10"], "data.dataset=cifar10: must be one of mnist, fashion_mnist"),
        (["data.view=diagonal"], "data.view=diagonal: must be one of rows, columns, pixels, permuted"),
        (["data.permutation_seed=-1"], "data.permutation_seed=-1: must be an integer >= 0 and <= 4294967295"),
        (["data.permutation_seed=0.5"], "data.permutation_seed=0.5: must be an integer"),
        # keys that nothing reads (Hydra's `+` adds any): a near miss of a real one says which
        (["+seeed=3"], "seeed: not a setting of rnnexp.train; did you mean seed=3?"),
        (["+optimzer=sgd"], "optimzer: not a setting of rnnexp.train; did you mean optimizer=sgd?"),
        (["+note=baseline"], "note: not a setting of rnnexp.train; the settings are: seed, grad_clip,"),
        (["+model.hiden_size=64"], "model.hiden_size: not a setting of model (SequenceClassifier); did you mean model"),
        (["+trainer.fast_dev_runn=true"], "did you mean +trainer.fast_dev_run=true?"),  # a Trainer setting: add it
    ],
)
def test_check_refuses_in_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        check(composed(tmp_path, *overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides, line",
    [
        (["model.hiden_size=64"], "model.hiden_size: not a setting of model (SequenceClassifier); did you mean"
                                  " model.hidden_size=64?"),
        (["optimzer=sgd"], "optimzer: not a setting of rnnexp.train; did you mean optimizer=sgd?"),
        (["modle.hidden_size=3"], "modle.hidden_size: no such setting; did you mean model.hidden_size=3?"),
        (["run_base.seed=1"], "run_base: not a setting of rnnexp.train; the settings are: seed, grad_clip,"),
        (["~optimzer"], "~optimzer: no such group or setting; did you mean ~optimizer?"),
        # the keys are those of the groups the command line chooses: SGD has a momentum, Adam none
        (["optimizer=sgd", "optimizer.momentun=0.9"], "optimizer.momentun: not a setting of optimizer (SGD); did you"
                                                       " mean optimizer.momentum=0.9?"),
        (["optimizer.momentun=0.9"], "optimizer.momentun: not a setting of optimizer (Adam); the settings are: lr,"),
        (["callbacks.checkpoint.monitr=val/loss"], "did you mean callbacks.checkpoint.monitor=val/loss?"),
        (["trainer.fast_dev_runn=true"], "did you mean +trainer.fast_dev_run=true?"),
        # a Trainer setting the config does not hold: Hydra's advice is right, and kept
        (["trainer.fast_dev_run=true"], "To append to your config use +trainer.fast_dev_run=true"),
        # no near miss: what there is, not Hydra's advice to add a key that check() would refuse
        (["model.colour=1"], "model.colour: not a setting of model (SequenceClassifier); the settings are: cell,"),
        (["tag=baseline"], "tag: not a setting of rnnexp.train; the settings are: seed,"),
    ],
)  # fmt: skip
def test_a_key_hydra_cannot_override_is_named_with_the_near_miss(overrides, line):
    from hydra.errors import HydraException

    from rnnexp.config import describe

    with pytest.raises(HydraException) as err, initialize_config_dir(str(CONF), version_base="1.3"):
        compose("train", overrides=overrides)
    described = describe(err.value, overrides)
    assert line in described and "\n" not in described, described


@pytest.mark.parametrize(
    "name, names, meant",
    [
        ("hiden_size", ["hidden_size", "layers"], "hidden_size"),
        ("sdg", ["adam", "adamw", "rmsprop", "sgd"], "sgd"),  # difflib: 0.67, below NEAR
        ("cup", ["auto", "cpu", "ddp", "gpu"], "cpu"),
        ("SGD", ["adam", "sgd"], "sgd"),
        ("Lstm", ["lstm", "lnlstm"], "lstm"),
        ("abc", ["bca"], None),  # the same letters, not one neighbouring pair swapped
        ("sdgx", ["sgd"], None),
        ("transformer", ["rnn", "lstm", "gru"], None),
    ],
)
def test_a_near_miss_is_a_close_name_another_case_or_two_neighbours_swapped(name, names, meant):
    from rnnexp.config import near

    assert near(name, names) == meant


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.precision=bf16-mixed"],
        ["trainer.precision=32"],
        ["trainer.precision=64-true"],
        ["trainer.deterministic=warn"],
        ["seed=4294967295"],
        ["scheduler=none", "trainer.max_epochs=-1"],  # no schedule: training until stopped is allowed
        ["trainer.max_epochs=-1", "trainer.max_steps=100"],
        ["optimized_metric=test/acc"],
        ["optimized_metric=train/loss", "test=false"],
        ["trainer.gradient_clip_val=null", "trainer.accumulate_grad_batches=1"],
        ["optimizer=sgd", "+optimizer.nesterov=true"],
        ["optimizer=rmsprop", "+optimizer.alpha=0.0", "+optimizer.centered=true"],
        ["+optimizer.betas=[0.9,0.99]", "+optimizer.foreach=null"],
        ["~scheduler", "~logger", "~callbacks", "~experiment"],  # what a `group=null` error suggests
        ["data=fashion_mnist", "data.view=permuted", "data.permutation_seed=4294967295"],
        ["data.view=pixels", "data.dataset=fashion_mnist"],
    ],
)
def test_check_accepts_what_works(tmp_path, overrides):
    check(composed(tmp_path, *overrides))


def test_the_trainers_boolean_arguments_take_only_true_false_or_null():
    parameters = inspect.signature(pl.Trainer).parameters.items()
    flags = {n for n, p in parameters if p.annotation in (bool, bool | None)}
    assert len(flags) >= 10, flags  # Lightning still annotates them
    for name in flags:
        ok = RULES[f"trainer.{name}"][0]
        assert ok(True) and ok(False) and not ok(1) and not ok("true") and not ok("maybe"), name


def test_settings_are_the_constructors_arguments():
    passed_by_rnnexp = {"self", "params", "input_size", "num_classes", "seed", "logger", "callbacks", "plugins"}
    passed_by_rnnexp |= {"steps_per_call"}  # the top-level key, shared with the module
    by_target = {"rnnexp.data.datamodule.SequenceDataModule": {"limit_train_batches"}}  # the trainer's: build's
    for target, names in SETTINGS.items():
        passed = passed_by_rnnexp | by_target.get(target, set())
        arguments = [n for n in inspect.signature(get_class(target)).parameters if n not in passed]
        assert list(names) == arguments, target
    for group in ("data", "model", "optimizer"):  # every option's class is known, so its keys are checked
        for option in options(group):
            with initialize_config_dir(str(CONF), version_base="1.3"):
                target = compose("train", overrides=[f"{group}={option}", "paths.run_dir=."])[group]._target_
            assert target in SETTINGS, f"{group}={option}"
            unchecked = [key for key in SETTINGS[target] if f"{group}.{key}" not in RULES]
            assert not unchecked, f"{group}={option}: no rule for {unchecked}"
    for option in options("trainer"):  # gpu, auto and ddp extend cpu
        with initialize_config_dir(str(CONF), version_base="1.3"):
            assert compose("train", overrides=[f"trainer={option}"]).trainer._target_ in SETTINGS, option


def test_model_options_share_one_base_that_is_not_an_option(tmp_path):
    base = BASES["model_base"]
    # conf/model/ holds the options, and only them: the fused kernels and the built-in step-wise cells
    assert options("model") == sorted(CELLS + STEPWISE_CELLS)
    for cell in options("model"):
        own = OmegaConf.load(CONF / "model" / f"{cell}.yaml")
        assert set(own) == {"defaults", "cell"} and own.cell == cell  # every other key is written once, in the base
        composed_model = composed(tmp_path, f"model={cell}").model
        assert list(composed_model) == list(base) and composed_model.cell == cell
    assert list(base)[1:] == list(SETTINGS[base["_target_"]])  # the base has every setting, in the class's order


def test_each_base_is_its_dataclass_and_the_options_that_use_it_change_only_what_they_name(tmp_path):
    """conf/'s options start from rnnexp.settings' nodes: what a composed group holds beyond the keys its
    option file writes is the dataclass's default, so a default is written in one place."""
    cases = {"data=mnist": ("data", settings.Data), "trainer=cpu": ("trainer", settings.Trainer)}
    cases |= {"logger=tensorboard": ("logger", settings.Logger)}
    for override, (group, cls) in cases.items():
        own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{override.split('=')[1]}.yaml"))
        got = OmegaConf.to_container(composed(tmp_path, override)[group], resolve=False)
        changed = {k: v for k, v in own.items() if k != "defaults"}
        assert got == {**settings.node(cls), **changed}, override
        assert not {k for k, v in changed.items() if settings.node(cls).get(k) == v}, f"{override}: a default again"
    top = OmegaConf.to_container(composed(tmp_path), resolve=False)  # paths.run_dir=tmp_path on its command line
    assert {k: top[k] for k in BASES["run_base"]} == {**BASES["run_base"], "paths": {**top["paths"]}}
    assert top["paths"] == {**BASES["run_base"]["paths"], "run_dir": str(tmp_path)}
    assert top["callbacks"] == BASES["callbacks_base"]
    assert not list(CONF.glob("*_base.yaml"))  # the bases live in rnnexp/settings.py only


def test_each_data_set_is_an_option_whose_root_variable_its_messages_name(tmp_path):
    assert options("data") == sorted(DATASETS)
    for key, dataset in DATASETS.items():
        data = OmegaConf.to_container(composed(tmp_path, f"data={key}").data)  # interpolations unresolved
        assert data["dataset"] == key and data["root"].startswith(f"${{env_or:{dataset.root_variable},"), data


def test_fashion_mnist_differs_from_mnist_in_its_files_only(tmp_path, tiny_mnist):
    mnist, fashion = composed(tmp_path).data, composed(tmp_path, "data=fashion_mnist").data
    assert list(fashion) == list(mnist)  # the same keys, in the same order
    assert {k for k in mnist if mnist[k] != fashion[k]} == {"dataset", "root"}
    fashion.root = str(tiny_mnist)
    datamodule = instantiate(fashion, seed=0)
    assert datamodule.dataset is FASHION_MNIST and datamodule.num_classes == 10


def bool_keys(node: dict, prefix: str = ""):
    for key, value in node.items():
        if key.startswith("_") or key == "hydra":  # Hydra's own: _partial_, hydra.job.chdir
            continue
        if isinstance(value, bool):
            yield f"{prefix}{key}"
        elif isinstance(value, dict):
            yield from bool_keys(value, f"{prefix}{key}.")


GLOBAL_GROUPS = ("experiment", "hparams_search")  # `# @package _global_`: their keys are the run's own


def test_every_boolean_key_in_conf_is_checked():
    files = [(CONF / "train.yaml", "")] + [
        (p, "" if p.parent.name in GLOBAL_GROUPS else f"{p.parent.name}.") for p in CONF.glob("*/*.yaml")
    ]
    nodes = [(OmegaConf.to_container(OmegaConf.load(path)), prefix) for path, prefix in files]
    nodes += [(base, "" if name == "run_base" else f"{name.removesuffix('_base')}.") for name, base in BASES.items()]
    keys = {key for node, prefix in nodes for key in bool_keys(node, prefix)}
    assert keys >= {"test", "data.download", "model.bidirectional"}
    for key in keys:
        assert key in RULES and not RULES[key][0]("maybe") and not RULES[key][0](1), key


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["scheduler=null"],
            "scheduler=null: a config group takes the name of one of its options, not null; "
            "for no scheduler use scheduler=none",
        ),
        (["model.layers=2", "logger=null"], "logger=null: .*; to run without one, drop the group with ~logger"),
        (["callbacks=null"], "callbacks=null: .*; to run without one, drop the group with ~callbacks"),
        (["model=null"], f"model=null: .*; choose one of {MODELS}"),
        (["-m", "scheduler=null,cosine"], "scheduler=null: .*; for no scheduler use scheduler=none"),
        (["--cfg", "job", "optimizer=null"], "optimizer=null: .*; choose one of adam, adamw, rmsprop, sgd"),
    ],
)
def test_group_set_to_null_is_answered_with_the_supported_form(argv, message):
    err = ValueError("Config group override must be a string or a list. Got NoneType")  # Hydra's
    line = null_group(err, argv)
    assert line is not None and "\n" not in line
    assert re.fullmatch(message, line), line
    assert null_group(ValueError("something else"), argv) is None


def test_empty_environment_variables_mean_their_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNEXP_OUTPUT_DIR", "")
    monkeypatch.setenv("RNNEXP_DATA_DIR", "")
    cfg = composed(tmp_path)
    assert cfg.paths.output_dir == "outputs" and cfg.data.root == "data"
    monkeypatch.setenv("RNNEXP_OUTPUT_DIR", str(tmp_path / "elsewhere"))
    assert composed(tmp_path).paths.output_dir == str(tmp_path / "elsewhere")


def test_empty_output_dir_variable_puts_the_run_in_the_working_folder(tmp_path, tiny_mnist):
    work = tmp_path / "work"
    work.mkdir()
    root_runs = Path("/runs").exists()
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": "", "PYTHONPATH": pythonpath}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, "-m", "rnnexp.train", *TINY, "trainer.max_steps=2", "scheduler=none"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in work.iterdir()] == ["outputs"]  # everything the run wrote is in outputs/
    (run,) = (work / "outputs" / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    assert Path("/runs").exists() == root_runs


def test_a_slurm_sweep_where_there_is_no_slurm_is_one_line(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # python, and no sbatch or srun
    result = run_train("-m", "hydra/launcher=slurm", "model=rnn,gru", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: hydra/launcher=slurm: no Slurm here")
    assert not (tmp_path / "multirun").exists()


def test_the_settings_and_checks_load_without_torch_or_lightning():
    """A bad value is answered before torch loads (seconds): rnnexp.settings, the checks and --help's text
    import neither torch nor Lightning."""
    loaded = "sorted({'torch', 'pytorch_lightning'} & set(sys.modules))"
    code = f"import sys, rnnexp.settings, rnnexp.config, rnnexp.help; print({loaded})"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr)


def test_an_empty_output_folder_is_refused_before_any_folder_is_made():
    """`paths.output_dir=` would put the run at the filesystem's root (/runs/<time>_...): refused in one line
    as Hydra resolves the run's folder, and a sweep before it starts."""
    made_before = Path("/runs").exists(), Path("/multirun").exists()
    for argv in (["paths.output_dir="], ["-m", "paths.output_dir=", "seed=1,2"]):
        result = cli("rnnexp.train", *argv)
        assert result.returncode == 1 and "paths.output_dir='': must be a folder" in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert (Path("/runs").exists(), Path("/multirun").exists()) == made_before


# Keys a user sets whose values only code further on knows, each refused there in one line.
CHECKED_WHERE_KNOWN = {
    "resume": "rnnexp.run.resume_argv, which reads the folder",
    "trainer.accelerator": "rnnexp.run, against Lightning's accelerator registry",
    "trainer.devices": "rnnexp.config.check, by accelerator and launcher",
    "trainer.strategy": "rnnexp.config.check (ddp_spawn, ddp_fork) and Lightning's strategy registry",
    "trainer.val_check_interval": "rnnexp.train.validate_by_batches and Lightning",
}


def test_every_key_a_user_sets_has_its_rule_or_is_checked_where_its_values_are_known():
    """A key with a --help line and no rule took any value: callbacks.samples.count=abc ended in a traceback."""
    assert {key for key in settings.HELP if key not in RULES} == set(CHECKED_WHERE_KNOWN)
