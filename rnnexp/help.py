"""What `python -m rnnexp.train --help` and the README's configuration tables say: the config groups
with their options, and the keys a user sets, one line each with its value and what it does.

Both are written from GROUPS below, rnnexp.settings.HELP and from the composed config (its values, the options
in conf/), so that the two cannot disagree:

    python -m rnnexp.help            # the README's tables, in Markdown (tests/test_help.py holds the README to it)

--help gets its text through the `rnnexp_help` resolver in conf/train.yaml's hydra.help.template, given
the config that command line composes: its choices and values, not only the defaults. Keys the checks
refuse (rnnexp.settings.REFUSED) are never listed. Imports neither torch nor Lightning.
"""

from __future__ import annotations

import re
import sys
import textwrap

from omegaconf import DictConfig, OmegaConf

from rnnexp.config import CONF, groups, options
from rnnexp.settings import HELP, REFUSED

# What each config group builds.
GROUPS = {
    "data": "the images: data set, splits, sequence view, batches",
    "model": "the network: its cell (a fused kernel or step-wise), size, layers",
    "optimizer": "the optimizer",
    "scheduler": "the learning-rate schedule, stepped every batch over the run",
    "trainer": "Lightning's Trainer: device, length, validation, precision",
    "logger": "TensorBoard's event files, in the run folder",
    "callbacks": "best and last checkpoints, progress, misclassified images",
    "experiment": "a preset that sets several groups and keys at once",
    "hparams_search": "an Optuna search space and sweeper (with -m)",
}

# The keys a user sets come from rnnexp.settings (HELP: one line each), each shown in a line of at most WIDTH
# columns with its value. A key of one option only (optimizer.momentum: sgd's) is shown with the value that
# option gives it; a Trainer argument the config does not hold is added with `+` (Lightning's default until then).

WIDTH = 100  # columns of the help's every line
COLUMN = 42  # where a key's description starts


def listed(key: str) -> bool:
    """Whether `key` is one the help shows: documented and not refused by the checks."""
    return key in HELP and key not in REFUSED


def shown(value) -> str:
    """A value as a command line would write it; an interpolation as what it gives by default
    (`${env_or:RNNEXP_DATA_DIR,data}`: data), so that the text does not depend on the environment."""
    if isinstance(value, str) and "${" in value:
        value = re.sub(r"\$\{env_or:\w+,([^}]*)\}", r"\1", value)
        return re.sub(r"\$\{([^}:]+)\}", r"\1", value)
    if isinstance(value, (dict, list)):
        return str(value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def value(cfg: DictConfig, key: str) -> str | None:
    """`key`'s value in `cfg` (unresolved); where `cfg` has no such key, the value each option that
    has it gives it, in brackets (`(sgd: 0.9)`), or None: a key to add with `+` (Lightning's default
    until then)."""
    group, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, group) if group else cfg
    if isinstance(node, DictConfig) and name in node:
        return shown(OmegaConf.to_container(node, resolve=False)[name])
    if "." not in group and (CONF / group).is_dir():
        given = [
            f"{option}: {shown(own[name])}"
            for option in options(group)
            if name in (own := OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml")))
        ]
        if given:
            return f"({', '.join(given)})"
    return None


def setting(cfg: DictConfig, key: str) -> str:
    """How --help writes a key: `key=value`, `key (option: value)` for another option's, `+key` to add."""
    given = value(cfg, key)
    return f"+{key}" if given is None else f"{key} {given}" if given.startswith("(") else f"{key}={given}"


def choices(cfg: DictConfig) -> dict[str, str | None]:
    """The option each group has in `cfg` (a config composed with its hydra node)."""
    chosen = OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {}
    return {group: chosen.get(group) for group in groups()}


def text(cfg: DictConfig) -> str:
    """--help's groups and keys for the config a command line composes (`cfg`, with its hydra node)."""
    lines = ["Groups (group=option; * this command's choice):"]
    chosen = choices(cfg)
    for group in groups():
        opts = ", ".join(o + ("*" if o == chosen[group] else "") for o in options(group))
        lines.append(f"  {group:<16}{GROUPS[group]}")
        lines += textwrap.wrap(opts, WIDTH, initial_indent=" " * 18, subsequent_indent=" " * 18)
    lines += ["", "Settings (key=value, with this command's values; key (option: value): that option's; +key: add it):"]
    for key in (k for k in HELP if listed(k)):
        line = setting(cfg, key)
        if len(line) > COLUMN - 3:  # a long value given on the command line
            line = line[: COLUMN - 6] + "..."
        lines.append(f"  {line:<{COLUMN - 2}}{HELP[key]}")
    return "\n".join(lines).replace("$", "$$")  # Hydra fills the template with string.Template


def help_resolver(*, _root_: DictConfig) -> str:
    """`${rnnexp_help:}` in hydra.help.template: the text for the config --help composed."""
    return text(_root_)


def markdown(cfg: DictConfig) -> str:
    """The README's configuration tables, for the default config (`cfg`, with its hydra node)."""
    chosen = choices(cfg)
    rows = ["| group | options (the default in bold) | what it builds |", "|---|---|---|"]
    for group in groups():
        opts = ", ".join(f"**`{o}`**" if o == chosen[group] else f"`{o}`" for o in options(group))
        rows.append(f"| `{group}` | {opts} | {GROUPS[group]} |")
    rows += ["", "| key | default | what it does |", "|---|---|---|"]
    for key in (k for k in HELP if listed(k)):
        given = value(cfg, key)
        rows.append(f"| `{key}` | {'added with `+`' if given is None else f'`{given}`'} | {HELP[key]} |")
    return "\n".join(rows)


def default_config() -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", return_hydra_config=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m rnnexp.help`: print the README's configuration tables."""
    if list(sys.argv[1:] if argv is None else argv):
        print(
            "error: python -m rnnexp.help takes no arguments; it prints the README's configuration tables",
            file=sys.stderr,
        )
        return 2
    print(markdown(default_config()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
