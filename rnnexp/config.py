"""Checks on a composed config, before anything is built, and one-line error messages.

The keys, their defaults and rules are rnnexp.settings'; here they are applied, together with the rules
that join several keys (dropout needs layers >= 2) or a sweep's settings. This module imports neither torch
nor Lightning, so a bad override is answered in about a second.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import re
import shutil
import sys
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from rnnexp.errors import ConfigError, ResourceError
from rnnexp.settings import CELLS, METRICS, REFUSED, RULES, SETTINGS, Run
from rnnexp.settings import is_int as _is_int

CONF = Path(__file__).resolve().parent.parent / "conf"

REQUIRED_GROUPS = ("data", "model", "optimizer", "trainer")  # scheduler, logger and callbacks may be left out


def env_or(name: str, default: str) -> str:
    """`${env_or:VAR,default}`: the variable, or the default where it is unset or empty. (`oc.env`
    gives "" for `VAR=`, and an empty RNNEXP_OUTPUT_DIR put the run folders at the filesystem root.)"""
    return os.environ.get(name) or default


def slurm_gpus(accelerator: str, devices):
    """`${slurm_gpus:${trainer.accelerator},${trainer.devices}}` (conf/hydra/launcher/slurm.yaml): the GPUs
    a Slurm job asks for: the trainer's devices where it trains on GPUs, none otherwise (a partition
    without GPUs refuses any --gpus-per-node, and `trainer=auto` takes what the node has)."""
    return devices if accelerator in ("gpu", "cuda") else None


def output_dir(folder) -> str:
    """`${output_dir:${paths.output_dir}}` (conf/train.yaml's hydra.run.dir and hydra.sweep.dir): the folder
    runs and sweeps go under, held to its rule as Hydra resolves a single run's folder, before it makes
    it (`paths.output_dir=` put the run at the filesystem's root); a sweep's jobs are checked before it starts."""
    ok, allowed = RULES["paths.output_dir"]
    if not ok(folder):
        raise ConfigError(f"paths.output_dir={_show(folder)}: must be {allowed}")
    return folder


# Registered on import: Hydra resolves hydra.run.dir and hydra.launcher, which use them, before the task runs.
OmegaConf.register_new_resolver("env_or", env_or, replace=True)
OmegaConf.register_new_resolver("output_dir", output_dir, replace=True)
OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus, replace=True)


def _value(cfg: DictConfig, key: str) -> str | None:
    """A key's value as a command line would give it; None for a node (`+optimzer.lr=0.1` makes one)."""
    value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    return None if isinstance(value, DictConfig) else _show(value)


def _show(value) -> str:
    if isinstance(value, str) and (value == "" or not value.isprintable()):
        return repr(value)  # '' and control characters such as a newline, visibly and on one line
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def options(group: str) -> list[str]:
    """A config group's options: the files in conf/<group>/."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@functools.cache
def groups() -> tuple[str, ...]:
    """The config groups a command line chooses among (conf/<group>/), Hydra's own left out."""
    return tuple(sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"))


@functools.cache
def top_level() -> tuple[str, ...]:
    """What a composed config may hold at its top: the run's own settings (rnnexp.settings.Run, and
    paths; the experiment presets and the search set only these) and the groups."""
    own = [f.name for f in fields(Run)] + ["paths"]
    return (*own, *(g for g in groups() if g not in own))


NEAR = 0.7  # difflib's similarity from which a name is taken for a misspelling (hiden_size, optimzer, lsmt)


def near(name: str, names) -> str | None:
    """The one of `names` that `name` misspells, or None: similar enough (difflib), the same but for
    case (LSTM), or the same but for two neighbouring letters swapped (sdg, cup), which difflib scores
    below NEAR in a short name."""
    names = list(names)
    if match := difflib.get_close_matches(name, names, n=1, cutoff=NEAR):
        return match[0]
    folded = name.lower()
    for candidate in names:
        other = candidate.lower()
        if other == folded:
            return candidate
        diff = [i for i, (a, b) in enumerate(zip(folded, other)) if a != b]
        if len(other) == len(folded) and len(diff) == 2 and diff[1] == diff[0] + 1 and sorted(other) == sorted(folded):
            return candidate
    return None


def did_you_mean(key: str, value: str | None, cfg: DictConfig | None) -> str:
    """`; did you mean <key>=<value>?` naming the key closest to `key`, one that no config has, or ''.

    Each part of the dotted key is compared with the names that are right at its level: at the top
    the run's settings and groups, in a group of a known class the class's settings (which the config
    need not hold: `+trainer.fast_dev_run=true`, with the `+` Hydra wants for a key the config lacks),
    elsewhere the keys of `cfg`, a composed config.
    """
    node, fixed = cfg, []
    for depth, part in enumerate(key.lstrip("+~").split(".")):
        if depth == 0:
            names = list(top_level())
        elif depth == 1 and isinstance(node, DictConfig) and node.get("_target_") in SETTINGS:
            names = list(SETTINGS[node.get("_target_")])
        else:
            names = [str(n) for n in node] if isinstance(node, DictConfig) else []
        if part not in names:
            part = near(part, names)
            if part is None:
                return ""
        fixed.append(part)
        node = node.get(part) if isinstance(node, DictConfig) else None
    suggestion = ".".join(fixed)
    if suggestion == key.lstrip("+~"):
        return ""
    held = cfg is not None and OmegaConf.select(cfg, suggestion, default=_ABSENT) is not _ABSENT
    prefix = "~" if key.startswith("~") else "" if held or suggestion in groups() else "+"
    return f"; did you mean {prefix}{suggestion}{'' if value is None else '=' + value}?"


_ABSENT = object()


def unknown_key(key: str, value: str | None, cfg: DictConfig | None) -> str | None:
    """The line for a `key` (set to `value`) that is not the run's: a near miss of a real one says which;
    None for a key a config may add but does not hold (where Hydra's `+` advice is right)."""
    if "/" in key:  # a group of a group, such as Hydra's hydra/launcher
        paths = group_paths()
        match = near(key.lstrip("+~"), paths)
        fix = f"did you mean {match}={value}?" if match else f"the groups are: {', '.join(paths)}"
        return f"{key.lstrip('+~')}: no such group; {fix}"
    group, _, name = key.rpartition(".")
    hint = did_you_mean(key, value, cfg)
    head = key.lstrip("+~").split(".")[0]
    if not group or head not in top_level() and not hint:  # `seed2=1`; `run_base.seed=1`, no near miss
        settings = [k for k in top_level() if k not in groups()]
        return f"{key if not group else head}: not a setting of rnnexp.train" + (
            hint or f"; the settings are: {', '.join(settings)}; the groups: {', '.join(groups())}"
        )
    target = OmegaConf.select(cfg, f"{group}._target_", default=None) if cfg is not None and "." not in group else None
    if target in SETTINGS and name not in SETTINGS[target]:
        return f"{key}: not a setting of {group} ({target.rpartition('.')[2]}); " + (
            hint.removeprefix("; ") if hint else f"the settings are: {', '.join(SETTINGS[target])}"
        )
    return f"{key}: no such setting{hint}" if hint else None


def group_paths() -> list[str]:
    """Every config group a command line can choose from, Hydra's too (hydra/launcher, hydra/sweeper/sampler)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with contextlib.ExitStack() as stack:
        if not GlobalHydra.instance().is_initialized():  # else @hydra.main's, or check_sweep's
            stack.enter_context(initialize_config_dir(str(CONF), version_base="1.3"))
        loader = GlobalHydra.instance().config_loader()

        def under(parent: str) -> list[str]:
            found = [f"{parent}/{g}" if parent else g for g in sorted(loader.list_groups(parent))]
            return [path for group in found for path in (group, *under(group))]

        return [path for path in under("") if path != "hydra"]  # hydra itself is no group to choose from


SLURM = ("slurm", "submitit_slurm")  # launchers whose jobs Slurm starts, one process per device


def check(cfg: DictConfig, multirun: bool = False, launcher: str | None = None) -> None:
    """Raise ConfigError for the first value that cannot work (`launcher`: a sweep's hydra/launcher)."""
    known = top_level()
    for key in cfg:
        if key not in known and key != "hydra":  # `+optimzer=sgd` adds a key that nothing reads
            raise ConfigError(unknown_key(str(key), _value(cfg, str(key)), cfg))
    for group in REQUIRED_GROUPS:
        if not cfg.get(group):
            raise ConfigError(f"{group}: none chosen; choose one of {', '.join(options(group))} ({group}=<option>)")
    for group in ("data", "model", "optimizer", "trainer"):
        target = cfg[group].get("_target_")
        allowed = SETTINGS.get(target, ())
        for key in cfg[group] if allowed else ():
            if not key.startswith("_") and key not in allowed:
                raise ConfigError(unknown_key(f"{group}.{key}", _value(cfg, f"{group}.{key}"), cfg))
    for key, (ok, allowed) in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, default="<absent>", throw_on_missing=True)
        except MissingMandatoryValue:  # `???`, which select would otherwise take for an absent key
            raise ConfigError(f"{key}=???: no value given; set {key}=<value>, {allowed}") from None
        except OmegaConfBaseException as err:  # an interpolation that does not resolve
            raise ConfigError(f"{key}: {describe(err)}") from None
        if not (isinstance(value, str) and value == "<absent>") and not ok(value):
            raise ConfigError(f"{key}={_show(value)}: must be {allowed}")
    if cfg.optimized_metric.startswith("test/") and not cfg.test:
        raise ConfigError(
            f"optimized_metric={cfg.optimized_metric}: a run with test=false has no test metrics; "
            f"set test=true or choose one of {', '.join(m for m in METRICS if not m.startswith('test/'))}"
        )
    trainer = cfg.trainer
    if cfg.get("scheduler") and trainer.get("max_epochs") == -1 and trainer.get("max_steps") == -1:
        raise ConfigError(
            "trainer.max_epochs=-1: with trainer.max_steps=-1 too the run has no set length, which a learning-rate "
            "schedule needs; set trainer.max_epochs or trainer.max_steps, or scheduler=none"
        )
    for key, (off, line) in REFUSED.items():
        name = key.removeprefix("trainer.")
        if trainer.get(name, off[0]) not in off:
            raise ConfigError(f"{key}={_show(trainer[name])}: {line.format(_show(trainer[name]))}")
    optimizer = cfg.optimizer
    if optimizer.get("nesterov") and (not optimizer.get("momentum") or optimizer.get("dampening", 0) != 0):
        raise ConfigError(
            "optimizer.nesterov=true: Nesterov momentum needs optimizer.momentum > 0 and optimizer.dampening=0"
        )
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
    if model.cell in CELLS and (model.get("residual") or model.get("cell_args")):  # absent in older runs' configs
        key = "model.residual=true" if model.residual else f"model.cell_args={_show(model.cell_args)}"
        raise ConfigError(
            f"{key}: only a step-wise cell takes it; model.cell={model.cell} is a fused kernel (for an LSTM's step "
            "by step use model.cell=lstm_stepwise)"
        )
    if model.cell not in CELLS and "init" in model and model.init != "default":
        raise ConfigError(
            f"model.init={model.init}: model.cell={model.cell} starts from its own initialization; leave it at default"
        )
    if model.get("residual") and model.layers == 1:
        raise ConfigError("model.residual=true: residual connections join stacked layers; set model.layers >= 2")
    if model.dropout and model.layers == 1:
        raise ConfigError(
            f"model.dropout={model.dropout}: dropout acts between layers; set model.layers >= 2 or dropout 0"
        )
    devices = trainer.get("devices", 1)
    if trainer.get("accelerator") == "cpu" and not (_is_int(devices) and devices >= 1 or devices == "auto"):
        raise ConfigError(
            f"trainer.devices={_show(devices)}: on CPU it is the number of processes; set e.g. trainer.devices=2"
        )
    strategy = trainer.get("strategy")
    if isinstance(strategy, str) and strategy.startswith(("ddp_spawn", "ddp_fork", "ddp_notebook")):
        raise ConfigError(
            f"trainer.strategy={strategy}: processes started this way train without the run's record, signals and "
            "step count, which stay in the first process; use trainer.strategy=ddp (trainer=ddp), single run or sweep"
        )
    if multirun and launcher in SLURM and not (_is_int(devices) and devices >= 1):
        raise ConfigError(
            f"trainer.devices={_show(devices)}: on Slurm it is the number of devices per job, each with its own "
            "process that Slurm starts (hydra.launcher.tasks_per_node); set e.g. trainer.devices=1"
        )
    if multirun and launcher not in (None, "basic", *SLURM) and str(cfg.trainer.get("devices", 1)) != "1":
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices}: hydra/launcher={launcher} runs jobs in worker processes, from "
            "which Lightning cannot start a process per device; sweep several devices with the basic launcher "
            "(leave out hydra/launcher) or on Slurm (hydra/launcher=slurm, which starts each device's process), or set "
            "trainer.devices=1"
        )


def describe(err: BaseException, argv: list[str] | None = None) -> str:
    """One line for a Hydra or OmegaConf error: what was asked and what is allowed, and for a name
    that is a near miss of a real one, which (`argv`, the command line, default sys.argv: the groups
    it chooses decide which keys there are)."""
    options, missing = getattr(err, "options", None), getattr(err, "missing_cfg_file", None)
    if options is not None and missing:
        group, _, name = missing.rpartition("/")
        match = near(name, options)
        hint = f"; did you mean {group}={match}?" if match else ""
        return f"{group}={name}: no such option; choose one of {', '.join(options)}{hint}"
    text = str(err)
    if found := re.match(r"Could not override '([^']+)'\.\s+To append to your config use \+\1=(.*)", text, re.S):
        key, value = found[1], found[2].strip()
        if line := unknown_key(key, value, _composed(sys.argv[1:] if argv is None else argv)):
            return line
    if found := re.match(r"Could not delete from config\. '([^']+)' does not exist", text):
        hint = did_you_mean(f"~{found[1]}", None, _composed(sys.argv[1:] if argv is None else argv))
        return f"~{found[1]}: no such group or setting{hint or '; nothing to remove'}"
    parts = [text] + ([str(err.__cause__)] if err.__cause__ else [])
    lines = [line.strip() for part in parts for line in part.splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(("full_key", "object_type")))


def _composed(argv: list[str]) -> DictConfig | None:
    """The config that the groups a command line chooses compose to (its other overrides left out;
    if those choices do not compose, the defaults), to look names up in; None if nothing composes."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    chosen = [
        a for a in argv
        if "=" in a and a.split("=", 1)[0].lstrip("+") in groups() and not any(c in a for c in ",()[]")
    ]  # fmt: skip
    for overrides in (chosen, []):
        try:
            with contextlib.ExitStack() as stack:
                if not GlobalHydra.instance().is_initialized():  # else @hydra.main's, or check_sweep's
                    stack.enter_context(initialize_config_dir(str(CONF), version_base="1.3"))
                return compose("train", overrides=overrides)
        except Exception:  # a choice that does not compose: said by the error being described
            continue
    return None


def null_group(err: BaseException, argv: list[str] | None = None) -> str | None:
    """One line for Hydra's plain ValueError on `group=null` (a config group takes an option name),
    naming the supported form; None for any other error."""
    if not (isinstance(err, ValueError) and str(err).startswith("Config group override must be a string")):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    parser = OverridesParser.create()
    for arg in [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]:
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # not an override (e.g. the `job` of `--cfg job`)
            continue
        group, value = override.key_or_group, override.value()
        chosen = value.list if isinstance(value, ChoiceSweep) else [value]  # `-m scheduler=null,cosine` too
        if override.is_delete() or None not in chosen or not (CONF / group).is_dir():
            continue
        if "none" in options(group):
            fix = f"for no {group} use {group}=none"
        elif group in REQUIRED_GROUPS:
            fix = f"choose one of {', '.join(options(group))}"
        else:  # logger, callbacks, experiment: the run works without them
            fix = f"to run without one, drop the group with ~{group}"
        return f"{group}=null: a config group takes the name of one of its options, not null; {fix}"
    return f"{err}: a config group takes the name of one of its options, not null"


def check_run(argv: list[str]) -> None:
    """A single run's command line (no -m): a search chosen there would be ignored (Hydra runs one job
    with the defaults of the search, testing off), so it is refused."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in ("hparams_search", "hydra/sweeper") and value not in ("", "null"):
            raise ConfigError(
                f"{arg}: a search runs its trials as a sweep, which needs -m; add it: python -m rnnexp.train -m "
                f"{' '.join(argv)}"
            )


def check_sweep(argv: list[str], config_name: str = "train") -> None:
    """Compose and check every job of a grid sweep before the first one starts: the bad ones are
    listed together in one ConfigError, and nothing trains. The settings of the sweep itself (the
    launcher's, the sweeper's) are checked for a search too."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from rnnexp.compat.hydra import grid_jobs

    overrides = [a for a in argv if not a.startswith(("-", "hydra.", "hydra/", "+hydra", "~hydra"))]
    launcher = next((a.split("=", 1)[1] for a in reversed(argv) if a.startswith("hydra/launcher=")), None)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        parsed = parser.parse_overrides(overrides)
        hydra = sweep_settings(argv, parsed, config_name)
        if hydra is not None:
            check_launch(hydra)
        if hydra is not None and not str(hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            slurm_here(hydra)
            return  # a search (hparams_search=optuna) draws its jobs as it goes: each trial is checked in its own job
        jobs = grid_jobs(parsed)
        keys = {o.key_or_group for o in parsed if o.is_sweep_override()}
        bad = []
        for num, job in enumerate(jobs):
            # a job is named by its values of the swept keys, as its folder is; the rest is the same for all
            name = " ".join([o for o in job if o.split("=", 1)[0].lstrip("+~") in keys] or job)
            try:
                cfg = compose(config_name, overrides=[*job, "paths.run_dir=."])
                check(cfg, multirun=True, launcher=launcher)
                check_cell(cfg)
            except ConfigError as err:
                bad.append(f"job {num} ({name}): {err}")
            except (HydraException, OmegaConfBaseException) as err:
                bad.append(f"job {num} ({name}): {describe(err, job)}")
    if bad:
        raise ConfigError(f"{len(bad)} of {len(jobs)} jobs cannot run, so none was started: {'; '.join(bad)}")
    slurm_here(hydra)


def check_cell(cfg: DictConfig) -> None:
    """A job's step-wise cell (a built-in one, or a user's class by its dotted path) and its
    model.cell_args, as the model's build checks them. Imports torch, so only where a job has one."""
    cell = cfg.model.get("cell") if cfg.get("model") else None
    if cell is None or cell in CELLS:
        return
    from rnnexp.models.recurrent import cell_class, check_args

    check_args(cell_class(str(cell)), str(cell), cfg.model.get("cell_args") or {})


def sweep_settings(argv: list[str], parsed, config_name: str = "train") -> DictConfig | None:
    """The sweep's `hydra` node: its launcher and sweeper with their settings, from the command line's
    config groups (hparams_search=optuna picks the sweeper) and hydra overrides, not from values that
    may not compose; None where that does not compose (each job then says why)."""
    from hydra import compose

    groups = [o.input_line for o in parsed if not o.is_sweep_override() and "." not in o.key_or_group]
    hydra_args = [a for a in argv if a.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))]
    try:
        return compose(config_name, overrides=[*groups, *hydra_args], return_hydra_config=True).hydra
    except Exception:
        return None


def slurm_here(hydra: DictConfig | None) -> None:
    """A sweep for Slurm needs its commands here (submitit's own error is a traceback); checked after
    the jobs' configs, which are wrong wherever the sweep runs."""
    target = str(hydra.launcher.get("_target_", "")) if hydra is not None else ""
    if target.endswith("SlurmLauncher") and not (shutil.which("sbatch") and shutil.which("srun")):
        raise ResourceError(
            "hydra/launcher=slurm: no Slurm here (sbatch or srun is not on PATH); run the sweep on a machine of the "
            "cluster (a login node), or use hydra/launcher=parallel to run the jobs on this machine"
        )


def check_launch(hydra: DictConfig) -> None:
    """Settings of a sweep that no job's config holds, which would otherwise fail inside the launcher or
    sweeper (joblib's `n_jobs == 0 has no meaning`) or do nothing (a search of no trials)."""
    launcher, sweeper = hydra.launcher, hydra.sweeper
    if "joblib" in str(launcher.get("_target_", "")):
        n_jobs = OmegaConf.select(launcher, "n_jobs", throw_on_resolution_failure=False)
        if not (n_jobs is None or _is_int(n_jobs) and n_jobs != 0):
            raise ConfigError(
                f"hydra.launcher.n_jobs={_show(n_jobs)}: must be an integer >= 1 (the jobs run at once), or -1 for one "
                "per core"
            )
    if "optuna" in str(sweeper.get("_target_", "")).lower():
        for key, what in (("n_trials", "the trials of the study, in all"), ("n_jobs", "the trials run at once")):
            value = OmegaConf.select(sweeper, key, throw_on_resolution_failure=False)
            if not (_is_int(value) and value >= 1):
                raise ConfigError(f"hydra.sweeper.{key}={_show(value)}: must be an integer >= 1 ({what})")
