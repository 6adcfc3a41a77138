"""Checks on a composed config, before anything is built, and one-line error messages.

This module imports neither torch nor Lightning, so a bad override is answered in about a second.
"""

from __future__ import annotations

import os
import sys

from omegaconf import DictConfig, OmegaConf

from rnnexp.errors import ConfigError

# Mirrors of names defined next to the code that uses them (tests keep the two in step); kept here
# so that checking a config does not import torch.
CELLS = ("rnn", "lstm", "gru")
INITIALIZERS = ("default", "normal", "xavier", "orthogonal", "he", "variance_scaling", "keras")
VIEWS = ("rows", "columns")


def _integer(low: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low, f"an integer >= {low}"


def _number(low: float, high: float | None = None, low_open: bool = False):
    def ok(v):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return False
        return (v > low if low_open else v >= low) and (high is None or v < high)

    bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
    return ok, f"a number {bound}"


def _one_of(*choices):
    return lambda v: v in choices, f"one of {', '.join(map(str, choices))}"


def _optional(rule):
    ok, allowed = rule
    return lambda v: v is None or ok(v), f"null or {allowed}"


_BOOL = (lambda v: isinstance(v, bool), "true or false")

RULES = {
    "seed": _integer(0),
    "grad_clip": _optional(_number(0, low_open=True)),
    "data.batch_size": _integer(1),
    "data.eval_batch_size": _integer(1),
    "data.val_size": _integer(1),
    "data.view": _one_of(*VIEWS),
    "model.cell": _one_of(*CELLS),
    "model.hidden_size": _integer(1),
    "model.layers": _integer(1),
    "model.bidirectional": _BOOL,
    "model.dropout": _number(0, 1),
    "model.nonlinearity": _one_of("tanh", "relu"),
    "model.forget_bias": _number(float("-inf")),
    "model.input_projection": _optional(_integer(1)),
    "model.init": _one_of(*INITIALIZERS),
    "model.readout_init": _one_of(*INITIALIZERS),
    "model.projection_init": _one_of(*INITIALIZERS),
    "optimizer.lr": _number(0, low_open=True),
    "optimizer.weight_decay": _number(0),
    "trainer.max_epochs": (lambda v: isinstance(v, int) and (v >= 1 or v == -1), "an integer >= 1, or -1"),
    "trainer.max_steps": (lambda v: isinstance(v, int) and (v >= 1 or v == -1), "an integer >= 1, or -1"),
    "trainer.log_every_n_steps": _integer(1),
}


def _show(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def check(cfg: DictConfig, multirun: bool = False) -> None:
    """Raise ConfigError for the first value that cannot work."""
    for key, (ok, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if value != "<absent>" and not ok(value):
            raise ConfigError(f"{key}={_show(value)}: must be {allowed}")
    model = cfg.model
    if model.cell != "rnn" and model.nonlinearity != "tanh":
        raise ConfigError(
            f"model.nonlinearity={model.nonlinearity}: only model.cell=rnn takes a nonlinearity "
            f"(model.cell={model.cell} has fixed gate activations); leave it at tanh"
        )
    if model.cell != "lstm" and model.forget_bias != 0:
        raise ConfigError(
            f"model.forget_bias={model.forget_bias}: only model.cell=lstm has a forget gate; leave it at 0"
        )
    if model.dropout and model.layers == 1:
        raise ConfigError(
            f"model.dropout={model.dropout}: dropout acts between layers; set model.layers >= 2 or dropout 0"
        )
    if multirun and str(cfg.trainer.get("devices", 1)) not in ("1", "auto"):
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices}: multi-device training would relaunch the whole "
            "sweep in every process; sweep with trainer.devices=1"
        )


def describe(err: BaseException) -> str:
    """One line for a Hydra or OmegaConf error: what was asked and what is allowed."""
    options, missing = getattr(err, "options", None), getattr(err, "missing_cfg_file", None)
    if options is not None and missing:
        group, _, name = missing.rpartition("/")
        return f"{group}={name}: no such option; choose one of {', '.join(options)}"
    parts = [str(err)] + ([str(err.__cause__)] if err.__cause__ else [])
    lines = [line.strip() for part in parts for line in part.splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(("full_key", "object_type")))


def swept(task_overrides, argv: list[str] | None = None) -> str:
    """A sweep job's folder name: its values for the keys the command line sweeps over.

    `python -m rnnexp.train -m model=rnn,gru data.batch_size=64` names its jobs `model=rnn` and
    `model=gru`: the fixed override is the same for all and is left out. The names become
    TensorBoard's run names, so they show what differs between runs.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    try:
        keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(args) if o.is_sweep_override()}
    except Exception:  # an unparsable command line fails later, with Hydra's own message
        keys = set()
    given = [o for o in task_overrides if not o.startswith("resume=")]  # a resumed sweep keeps its names
    chosen = [o for o in given if o.split("=", 1)[0].lstrip("+~") in keys] or given
    return ",".join(chosen).replace(os.sep, "_") or "defaults"


CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def check_sweep(argv: list[str], config_name: str = "train") -> None:
    """Compose and check every job of a grid sweep before the first one starts: the bad ones are
    listed together in one ConfigError, and nothing trains."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if not a.startswith(("-", "hydra.", "hydra/", "+hydra", "~hydra"))]
    with initialize_config_dir(CONF, version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        jobs = BasicSweeper.split_arguments(parser.parse_overrides(overrides), None)[0]
        bad = []
        for num, job in enumerate(jobs):
            try:
                check(compose(config_name, overrides=[*job, "paths.run_dir=."]), multirun=True)
            except ConfigError as err:
                bad.append(f"job {num} ({' '.join(job)}): {err}")
            except (HydraException, OmegaConfBaseException) as err:
                bad.append(f"job {num} ({' '.join(job)}): {describe(err)}")
    if bad:
        raise ConfigError(f"{len(bad)} of {len(jobs)} jobs cannot run, so none was started: {'; '.join(bad)}")
