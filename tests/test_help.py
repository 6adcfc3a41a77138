"""`python -m rnnexp.train --help`: the groups with their options and the keys a user sets, one line
each, the same as the README's configuration tables (rnnexp/help.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from rnnexp.config import CONF, groups, options
from rnnexp.help import WIDTH, default_config, markdown
from rnnexp.settings import HELP as KEYS
from rnnexp.settings import REFUSED, SETTINGS, WIRING
from tests.conftest import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def helped(*argv: str) -> str:
    result = cli("rnnexp.train", *argv, "--help")
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def default_help() -> str:
    return helped()


def listed_keys(text: str) -> list[str]:
    """The keys of the help's settings lines, in order (`  key=value  ...`, `  key (sgd: 0.9) ...`, `  +key ...`)."""
    settings = text.split("\nSettings (", 1)[1]
    return [m[1] for m in re.finditer(r"^  \+?([\w.]+)[= ]", settings, re.M)]


def test_help_holds_every_group_with_its_options_and_each_key_once(default_help):
    lines = default_help.splitlines()
    for group in groups():
        (at,) = [i for i, line in enumerate(lines) if line.startswith(f"  {group} ")]
        # the options follow the group's line, wrapped; the default is starred
        shown = " ".join(lines[at + 1 : at + 5]).replace("*", "")
        assert set(options(group)) <= {o.strip() for o in shown.split(",")} | set(shown.split()), group
    keys = listed_keys(default_help)
    assert sorted(keys) == sorted(k for k in KEYS if k not in REFUSED) and len(keys) == len(set(keys))
    assert "data.root=data " in default_help and "model.hidden_size=128 " in default_help  # each with its value
    assert "lstm*" in default_help and "adam*" in default_help  # the defaults marked


def test_help_has_no_raw_yaml_no_refused_key_and_fits_100_columns(default_help):
    assert "_target_" not in default_help and "_partial_" not in default_help
    for key in REFUSED:
        assert key.rpartition(".")[2] not in default_help, key
    too_long = [line for line in default_help.splitlines() if len(line) > WIDTH]
    assert not too_long, too_long


def test_help_shows_the_values_of_its_command_line():
    text = helped("optimizer=sgd", "optimizer.lr=0.1", "data.root=/a/folder/of/mnist/files/far/away/from/here")
    assert "adam, adamw, rmsprop, sgd*" in text
    assert re.search(r"^  optimizer\.lr=0\.1 ", text, re.M)
    assert re.search(r"^  optimizer\.momentum=0\.9 ", text, re.M)  # SGD holds it: no longer another option's
    assert re.search(r"^  data\.root=/a/folder/of/mnist/files\S*\.\.\. ", text, re.M)  # a long value is cut
    assert all(len(line) <= WIDTH for line in text.splitlines())
    assert re.search(r"^  optimizer\.momentum \(sgd: 0\.9\) ", helped(), re.M)  # with adam: sgd's


def test_a_misspelled_key_in_a_help_command_is_named_not_helped():
    result = cli("rnnexp.train", "model.hiden_size=64", "--help")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: model.hiden_size: not a setting of model (SequenceClassifier); did you mean model.hidden_size=64?"
    )


def test_hydra_help_stays_hydras():
    result = cli("rnnexp.train", "--hydra-help")
    assert result.returncode == 0 and "== Flags ==" in result.stdout and "--hydra-help" in result.stdout


def test_the_readme_tables_are_the_helps():
    # one source: the README's configuration tables are `python -m rnnexp.help`'s output, from the same
    # descriptions and config as --help; after changing either, paste that output between the markers
    readme = README.read_text()
    tables = readme.split("(tests/test_help.py) -->\n", 1)[1].split("\n<!-- end of python -m rnnexp.help -->")[0]
    assert tables == markdown(default_config())


def leaves(node, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict) and key != "cell_args":  # a cell's own settings: one key, model.cell_args
            yield from leaves(value, f"{prefix}{key}.")  # scheduler=none's {} holds none
        else:
            yield f"{prefix}{key}"


PRESETS = ("experiment", "hparams_search")  # keys of their own (a paper's schedule) are documented in their files


def wiring(key: str) -> bool:
    return any(key == w or key.startswith(f"{w}.") or key.endswith(f".{w}") for w in WIRING)


def test_every_key_a_user_sets_has_a_help_line_and_every_line_a_key():
    seen = set()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for group in (g for g in groups() if g not in PRESETS):
            for option in options(group):
                cfg = compose("train", overrides=[f"{group}={option}"])
                seen |= set(leaves(OmegaConf.to_container(cfg, resolve=False)))
    undocumented = {k for k in seen - set(KEYS) if not wiring(k) and k not in REFUSED}
    assert not undocumented, f"give a help line in rnnexp/settings.py (none: wiring) to {sorted(undocumented)}"
    # and each documented key exists: in some option's config, or a Trainer argument to add with +
    trainer = {f"trainer.{k}" for k in SETTINGS["pytorch_lightning.Trainer"]}
    assert not set(KEYS) - seen - trainer, sorted(set(KEYS) - seen - trainer)
    assert not set(KEYS) & set(REFUSED)


def test_refused_keys_are_refused_by_the_checks(tmp_path):
    from rnnexp.config import check
    from rnnexp.errors import ConfigError

    with initialize_config_dir(str(CONF), version_base="1.3"):
        for key, (off, _) in REFUSED.items():
            cfg: DictConfig = compose("train", overrides=[f"++{key}=2", f"paths.run_dir={tmp_path}"])
            with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=2: "):
                check(cfg)
            assert 2 not in off
