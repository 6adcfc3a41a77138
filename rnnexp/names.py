"""Run and job folder names. They are TensorBoard's run names too, so each says what its run is.

A sweep's job: `<number>_<its values of the swept keys>`, e.g. `07_model=gru,optimizer.lr=0.003162`.
The number is zero-padded to the sweep's size, so that folders sort in launch order; an Optuna search
numbers its jobs by trial (a continued study never reuses one).
A single run: `<time>_<its overrides>`, e.g. `2026-11-30_09-23-07_426487_model=lstm,model.layers=3`,
led by its model where the command line does not choose one.

A long value is shortened, keeping its head and its end (two data.root paths often differ only
there) with a hash of the whole between, so that two values stay apart; a key is never dropped. A name
stays within the file system's limit, counted in bytes (255 on Linux), whatever its characters.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

NAME_BYTES = 200  # a name's bytes after its number or time (file systems allow 255 in all)
VALUE_BYTES = 48  # a value longer than this is shortened to its head, a hash and its end
NOT_NAMED = ("data.root", "paths.output_dir", "ckpt_path", "resume", "trial")  # where a run is, not what
SEARCH_WIDTH = 3  # digits of a job number where the sweep's size is not known (a search's intervals)


def job_folder(num, task_overrides, params=None, n_trials=None, sweep_dir: str | None = None, argv=None) -> str:
    """A sweep job's folder name: its number, then its values for the keys the sweep varies.

    `python -m rnnexp.train -m model=rnn,gru data.batch_size=64` names its jobs `0_model=rnn` and
    `1_model=gru`: the fixed override is the same for all and is left out. The swept keys are those
    of the command line and of the sweeper's `params` (a search space in a config file).

    The command line is the sweep's, as Hydra wrote it to `sweep_dir`/multirun.yaml before launching
    any job: a job that a launcher runs in a process of its own (submitit's, on Slurm) has another
    sys.argv.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if argv is None:
        argv = sweep_command_line(sweep_dir)
    args = [a for a in argv if not a.startswith("-")]
    try:
        parser = OverridesParser.create()
        parsed = [o for o in parser.parse_overrides(args) if o.is_sweep_override()]
        parsed += parser.parse_overrides([f"{k}={v}" for k, v in (params or {}).items()])
    except Exception:  # an unparsable command line fails later, with Hydra's own message
        parsed = []
    keys = {o.key_or_group for o in parsed} | {str(k) for k in (params or {})}
    # a resumed sweep keeps its names; an Optuna trial's number is the folder's number already
    given = [o for o in task_overrides if not o.startswith(("resume=", "trial="))]
    chosen = [o for o in given if o.split("=", 1)[0].lstrip("+~") in keys] or given
    size = n_trials if n_trials is not None else _grid_size(parsed)
    width = len(str(max(size - 1, 0))) if size else SEARCH_WIDTH
    return f"{int(num):0{width}d}_{named(chosen) or 'defaults'}"


def run_folder(time: str, task_overrides, model: str | None = None) -> str:
    """A single run's folder name: its start time (to the microsecond: two runs started in the same
    second stay apart), then its overrides, led by its model where none of them chooses one."""
    given = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") not in NOT_NAMED]
    if model and not any(o.split("=", 1)[0].lstrip("+~") in ("model", "experiment") for o in given):
        given.insert(0, f"model={model}")
    return f"{time}_{named(given)}" if given else time


def named(overrides: list[str]) -> str:
    """Overrides joined into one name of at most NAME_BYTES bytes: long values shortened first, then
    all values evenly, never a key dropped; path separators become `_`."""
    overrides = [o.replace(os.sep, "_") for o in overrides]
    for budget in (VALUE_BYTES, 24, 12):
        name = ",".join(_short(o, budget) for o in overrides)
        if len(name.encode()) <= NAME_BYTES:
            return name
    return _shorten(name, NAME_BYTES)  # more keys than fit: the whole name, shortened the same way


def _short(override: str, budget: int) -> str:
    key, sep, value = override.partition("=")
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":  # Hydra's quotes: not part of the value
        value = value[1:-1]
    try:
        number = float(value)
    except ValueError:
        return f"{key}{sep}{_shorten(value, budget)}"
    # an Optuna trial's lr=0.0031622776601683794 is lr=0.003162
    return f"{key}={number:.4g}" if len(value) > 10 and math.isfinite(number) else override


def _shorten(text: str, budget: int) -> str:
    """`text` if it fits `budget` bytes, else its head, a hash of the whole and its end, in `budget`
    bytes (never a character cut in half)."""
    data = text.encode()
    if len(data) <= budget:
        return text
    digest = "~" + hashlib.blake2s(data, digest_size=3).hexdigest() + "~"
    head = (budget - len(digest)) // 2
    tail = budget - len(digest) - head
    return data[:head].decode(errors="ignore") + digest + data[len(data) - tail :].decode(errors="ignore")


def _grid_size(parsed) -> int | None:
    """How many jobs the sweep overrides make (the product of their value counts); None where one is
    not a list of values (an interval a search samples from)."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob, RangeSweep

    from rnnexp.config import options

    size = 1
    for override in parsed:
        value = override.value()
        if isinstance(value, ChoiceSweep):
            size *= len(value.list)
        elif isinstance(value, RangeSweep):
            size *= len(list(value.range()))
        elif isinstance(value, Glob):
            size *= len(value.filter(options(override.key_or_group)))
        elif isinstance(value, list):
            size *= len(value)
        elif override.is_sweep_override():
            return None
    return size


def sweep_command_line(sweep_dir: str | None) -> list[str]:
    """The sweep's overrides: from its multirun.yaml where there is one, else this process's sys.argv."""
    saved = Path(sweep_dir) / "multirun.yaml" if sweep_dir else None
    if saved is not None and saved.is_file():
        overrides = OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task")
        if overrides is not None:
            return list(overrides)
    return sys.argv[1:]
