"""Whatever value a key of rnnexp.settings.RULES is given on the command line, check() refuses it with a
ConfigError naming `key=` exactly when the key's rule refuses it, and refuses every value of the
wrong type, before any data is read."""

from __future__ import annotations

import math
from unittest import mock

import pytest
from conftest import CONF
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, OverrideParseException
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from rnnexp.config import ConfigError, check
from rnnexp.settings import CELLS, INITIALIZERS, METRICS, PRECISIONS, RULES, STEPWISE_CELLS, VIEWS

pytestmark = pytest.mark.slow  # property tests: hundreds of generated cases each

# Where a key is a setting only of some options, or is refused together with another setting
# (dropout with one layer, a relu LSTM, no schedule length): the overrides that make it checkable.
CONTEXT = {
    "model.dropout": ["model.layers=2"],
    "model.residual": ["model=lnlstm", "model.layers=2"],  # only step-wise cells, between layers
    "model.cell_args": ["model=lnlstm"],
    "model.nonlinearity": ["model=rnn"],
    "optimizer.momentum": ["optimizer=sgd"],
    "optimizer.dampening": ["optimizer=sgd"],
    "optimizer.nesterov": ["optimizer=sgd"],  # momentum 0.9, dampening 0: what Nesterov needs
    "optimizer.alpha": ["optimizer=rmsprop"],
    "optimizer.centered": ["optimizer=rmsprop"],
    "scheduler.eta_min": ["scheduler=cosine"],
    "trainer.max_epochs": ["trainer.max_steps=100"],  # -1 is allowed where the steps are set
}

TRAINER_FLAGS = (
    "enable_checkpointing", "enable_progress_bar", "enable_model_summary", "benchmark", "inference_mode",
    "detect_anomaly", "barebones", "sync_batchnorm", "use_distributed_sampler", "enable_autolog_hparams",
)  # fmt: skip
# The Python types each key may hold, written down apart from the rules: a value of any other type
# must be refused whatever the rule says about ranges.
INT, NUMBER, BOOL, STR, NONE, LIST = (int,), (int, float), (bool,), (str,), (type(None),), (list,)
KINDS = {
    **dict.fromkeys(["seed", "data.batch_size", "data.eval_batch_size", "data.val_size", "data.permutation_seed"], INT),
    **dict.fromkeys(["model.hidden_size", "model.layers", "trainer.max_epochs", "trainer.max_steps"], INT),
    "trainer.log_every_n_steps": INT,
    "trainer.limit_train_batches": NUMBER + NONE,  # batches (an int) or a fraction of the epoch (a float)
    **dict.fromkeys(["steps_per_call", "data.shift"], INT),
    "label_smoothing": NUMBER,
    **dict.fromkeys(["model.input_projection", "callbacks.last.every_n_steps", "threads"], INT + NONE),
    **dict.fromkeys(["model.dropout", "model.forget_bias", "optimizer.lr", "optimizer.weight_decay"], NUMBER),
    **dict.fromkeys(["optimizer.momentum", "optimizer.dampening", "optimizer.alpha", "optimizer.eps"], NUMBER),
    **dict.fromkeys(["scheduler.max_lr", "scheduler.pct_start", "scheduler.eta_min"], NUMBER),
    **dict.fromkeys(["grad_clip", "callbacks.last.every_seconds"], NUMBER + NONE),
    **dict.fromkeys(["test", "data.download", "model.bidirectional", "logger.default_hp_metric"], BOOL),
    **dict.fromkeys(
        ["callbacks.checkpoint.auto_insert_metric_name", "callbacks.checkpoint.enable_version_counter"], BOOL
    ),
    **{f"optimizer.{k}": BOOL for k in ("amsgrad", "nesterov", "centered", "maximize", "capturable")},
    **{f"optimizer.{k}": BOOL for k in ("differentiable", "decoupled_weight_decay")},
    **{f"optimizer.{k}": BOOL + NONE for k in ("foreach", "fused")},
    **{f"trainer.{k}": BOOL + NONE for k in TRAINER_FLAGS},  # Lightning's true-or-false arguments
    "trainer.deterministic": BOOL + NONE + STR,  # "warn"
    **dict.fromkeys(["optimized_metric", "data.view", "data.dataset", "model.cell", "model.nonlinearity"], STR),
    **dict.fromkeys(["model.init", "model.readout_init", "model.projection_init", "data.root"], STR),
    "trainer.precision": STR + INT,
    "ckpt_path": STR + NONE,
    "paths.output_dir": STR,
    **dict.fromkeys(["callbacks.progress_bar.refresh_rate", "callbacks.samples.count"], INT),
    "optimizer.betas": LIST,
    "model.cell_args": (dict,),
    "model.residual": BOOL,
}


def test_every_rule_has_a_kind():
    assert set(KINDS) == set(RULES)


# Values of many kinds: the edges of every range the rules draw, and what the rules choose among.
NUMBERS = st.one_of(
    st.integers(),
    st.integers(-2, 3),
    st.sampled_from([2**31, 2**32 - 1, 2**32, 2**63, 10**30, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 0.999, 1.0, 1.5, 1e-3, math.nan, math.inf, -math.inf]),
)
WORDS = sorted(
    {*CELLS, *STEPWISE_CELLS, *INITIALIZERS, *VIEWS, *METRICS, *(p for p in PRECISIONS if isinstance(p, str))}
    | {"tanh", "relu", "warn", "", " ", "???", "5", "1e-3", "true", "null", "nan", "data", "/tmp"}
)
TEXT = st.one_of(st.sampled_from(WORDS), st.text(st.characters(codec="ascii", exclude_characters="'\\$"), max_size=8))
SCALARS = st.one_of(NUMBERS, st.booleans(), st.none(), TEXT)
INNER = st.one_of(NUMBERS, st.booleans(), st.none(), TEXT.filter(lambda s: s != "???"))  # ??? only as a value
VALUES = st.one_of(
    SCALARS,
    st.lists(INNER, max_size=3),
    st.lists(st.floats(-0.5, 1.5), min_size=2, max_size=2),  # betas-like
    st.dictionaries(st.sampled_from(["a", "lr", "x"]), INNER, max_size=2),
)


def render(value) -> str:
    """`value` in Hydra's override syntax: strings quoted, so that '5' stays a string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return "[" + ",".join(map(render, value)) + "]"
    return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"


def same(composed, value) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return isinstance(composed, float) and math.isnan(composed)
    if isinstance(value, (list, dict)):
        plain = OmegaConf.to_container(composed)
        return (
            len(plain) == len(value) and all(same(a, b) for a, b in zip(plain, value))
            if isinstance(value, list)
            else plain.keys() == value.keys() and all(same(plain[k], v) for k, v in value.items())
        )
    return type(composed) is type(value) and composed == value


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        yield


def reads_no_data(*args, **kwargs):
    raise AssertionError("check() read the data")


@pytest.mark.parametrize("key", list(RULES))
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUES)
def test_check_refuses_exactly_what_the_rule_refuses_naming_the_key(hydra_conf, key, value):
    ok, allowed = RULES[key]
    root = [] if key == "data.root" else ["data.root=/nonexistent/mnist"]  # a check that read data would fail
    overrides = [*CONTEXT.get(key, []), *root, "paths.run_dir=/nonexistent/run", f"++{key}={render(value)}"]
    try:
        cfg = compose("train", overrides=overrides)
    except OverrideParseException:  # override syntax Hydra cannot parse: not what is tested here
        reject()
    except ConfigCompositionException:  # a value Hydra cannot merge into the key's node (a list into a mapping)
        assert isinstance(OmegaConf.select(compose("train", overrides=overrides[:-1]), key), DictConfig), key
        reject()
    composed = OmegaConf.select(cfg, key, throw_on_missing=False) if value != "???" else "???"
    assert value == "???" or same(composed, value), f"Hydra turned {render(value)} into {composed!r}"
    with (
        mock.patch("rnnexp.data.idx.load", reads_no_data),
        mock.patch("rnnexp.data.idx.locate", reads_no_data),
    ):
        try:
            check(cfg)
        except ConfigError as err:
            refused = str(err)
        else:
            refused = None
    accepted = value != "???" and ok(composed)
    event("accepted" if accepted else "refused")
    if accepted:
        assert refused is None, f"{key}={render(value)} passes its rule ({allowed}) but check says: {refused}"
    else:
        assert refused is not None, f"{key}={render(value)} fails its rule ({allowed}) but check accepts it"
        assert refused.startswith(f"{key}="), refused
        assert "\n" not in refused
    if not isinstance(value, KINDS[key]) or (isinstance(value, bool) and bool not in KINDS[key]):
        assert refused is not None, f"{key}={render(value)}: a {type(value).__name__} is accepted"
