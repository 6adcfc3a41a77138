"""Every key a user sets, written once: its default, the rule its value must pass, and what --help says of it.

A dataclass per class a config group builds (the data, the model, the Trainer, the logger, each callback)
and one for the run's own keys: each field is a key, `key(default, rule, help)`. From them come

- the config nodes the options in conf/ start from (`model_base`, `data_base`, ...; Hydra's ConfigStore,
  registered when this module is imported): an option file names its base and what it changes;
- RULES, the checks rnnexp.config.check applies to a composed config before anything is built;
- SETTINGS, the keys a group's class takes (a key outside them is refused, a near miss named);
- HELP, the one line of --help and of the README's configuration tables (rnnexp.help) for each key.

The optimizer and scheduler groups choose among classes (torch.optim.Adam, SGD, ...), each option with its
own values: their keys, rules and help are one dataclass each (`Optimizer`, `Scheduler`), each option's
values its file in conf/, and the arguments of each class the table beside the dataclass. Adding an optimizer
is its file in conf/optimizer/ and its entry in OPTIMIZERS (README: "Adding an option").

Imports neither torch nor Lightning: a bad value is answered before either loads. The names of code that
the rules choose among (CELLS, VIEWS, ...) are mirrors of the code's own tables, held equal by tests.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

CELLS = ("rnn", "lstm", "gru")  # the fused kernels (rnnexp.models.classifier.CORES)
STEPWISE_CELLS = ("lstm_stepwise", "lstm_peephole", "lnlstm", "indrnn", "cornn", "lem")  # rnnexp.models.cells.CELLS
INITIALIZERS = ("default", "normal", "xavier", "orthogonal", "he", "variance_scaling", "keras")  # models.init
VIEWS = ("rows", "columns", "pixels", "permuted")  # rnnexp.data.datamodule.VIEWS
DATASETS = ("mnist", "fashion_mnist")  # rnnexp.data.datasets.DATASETS
# Lightning 2.6's `Trainer(precision=...)` values (rnnexp.compat.lightning.precision_values, held equal by a test).
PRECISIONS = (
    "transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
    "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16, "auto",
)  # fmt: skip
# What a run logs, so what it can return to a sweeper (test/* only when it tests).
METRICS = ("val/acc_best", "val/acc", "val/loss", "train/loss", "train/acc", "test/acc", "test/loss")

# A rule: (does a value pass, what passes, in words: "must be <this>").
Rule = tuple[Callable[[Any], bool], str]
FLOAT32_MAX = 3.4028234663852886e38


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def integer(low: int, high: int | None = None) -> Rule:
    bound = f">= {low}" + (f" and <= {high}" if high is not None else "")
    return lambda v: is_int(v) and v >= low and (high is None or v <= high), f"an integer {bound}"


def number(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = True) -> Rule:
    """A finite int or float within the bounds: inf and nan never make a setting work."""

    def ok(v):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or abs(v) > FLOAT32_MAX:
            return False  # training computes in float32 (or narrower): 1e300 would overflow there
        above = low is None or (v > low if low_open else v >= low)
        return above and (high is None or (v < high if high_open else v <= high))

    bounds = [f"{'>' if low_open else '>='} {low}"] if low is not None else []
    bounds += [f"{'<' if high_open else '<='} {high}"] if high is not None else []
    kind = "a number" if low is not None and high is not None else "a finite number"
    return ok, " ".join([kind, " and ".join(bounds)]).strip()


def one_of(*choices) -> Rule:
    return lambda v: v in choices, f"one of {', '.join(map(str, choices))}"


def optional(rule: Rule) -> Rule:
    ok, allowed = rule
    return lambda v: v is None or ok(v), f"null or {allowed}"


def _betas(v) -> bool:
    unit = number(0, 1)[0]
    return isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2 and all(unit(b) for b in v)


BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")
OPTIONAL_BOOL: Rule = (lambda v: v is None or isinstance(v, bool), "true, false or null")
EPOCHS_OR_STEPS: Rule = (lambda v: is_int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1")
POSITIVE = number(0, low_open=True)
UINT32 = integer(0, 2**32 - 1)  # NumPy's RandomState and Lightning's seed_everything take uint32 seeds

ABSENT = "<absent>"  # the default of a key the config holds only once a command line adds it (+key=...)


def key(default: Any = ABSENT, rule: Rule | None = None, help: str | None = None) -> Any:
    """A config key: its default (ABSENT: not in the config until added with `+`), the rule its value
    must pass (None: not checked), and its line in --help (None: wiring the user does not set)."""
    meta = {"rule": rule, "help": help}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Run:
    """The run's own keys, at the config's top (conf/train.yaml starts from these)."""

    seed: int = key(42, UINT32, "seeds the weights, batch order and augmentation")
    grad_clip: float | None = key(1.0, optional(POSITIVE), "max global gradient norm; null: no clipping")
    # cross-entropy's: the target keeps 1 - this, the rest shared by all classes
    label_smoothing: float = key(0.1, number(0, 1), "of the objective optimized, not of train/loss (0: off)")
    # optimizer steps per Lightning training step: its fixed cost paid once for these
    steps_per_call: int = key(10, integer(1), "optimizer steps per Lightning step: speed, nothing else")
    ckpt_path: str | None = key(
        None,
        optional((lambda v: isinstance(v, str) and v != "", "a checkpoint file or a run folder")),
        "start from these weights: a .ckpt file or a run folder",
    )
    # python -m rnnexp.train resume=<folder>; checked by rnnexp.run, which reads the folder
    resume: str | None = key(None, None, "continue this run or sweep folder where it stopped")
    test: bool = key(True, BOOL, "test the best checkpoint on the full test set")
    optimized_metric: str = key("val/acc_best", one_of(*METRICS), "what a job returns to a sweeper (or test/acc ...)")
    reference: dict | None = key(None)  # a preset's published result: {accuracy, measured_on, source}
    trial: int | None = key(None)  # set by the Optuna search: the study trial this job reports to
    # null: all cores, divided among the jobs hydra/launcher=joblib runs at once
    threads: int | None = key(None, optional(integer(1)), "torch's CPU threads a job; null: its share of the cores")


@dataclass
class Paths:
    """Where runs go (`paths.*`)."""

    output_dir: str = key(  # empty would put the runs at the filesystem's root (/runs/...)
        "${env_or:RNNEXP_OUTPUT_DIR,outputs}",
        (lambda v: isinstance(v, str) and v.strip() != "", "a folder, or left out (RNNEXP_OUTPUT_DIR, else outputs)"),
        "where runs and sweeps go (RNNEXP_OUTPUT_DIR)",
    )
    run_dir: str = key("${hydra:runtime.output_dir}")


@dataclass
class Data:
    """rnnexp.data.datamodule.SequenceDataModule's arguments (`data.*`); `seed` is the run's."""

    _target_: str = "rnnexp.data.datamodule.SequenceDataModule"
    dataset: str = key("mnist", one_of(*DATASETS), "mnist or fashion_mnist (data=fashion_mnist sets it)")
    root: str = key(  # the four IDX files, .gz or plain
        "${env_or:RNNEXP_DATA_DIR,data}",
        (lambda v: isinstance(v, str) and v != "", "a folder"),
        "folder of the IDX files (RNNEXP_DATA_DIR for MNIST)",
    )
    batch_size: int = key(128, integer(1), "training images per optimizer step")
    eval_batch_size: int = key(1000, integer(1), "validation and test images per batch")  # no gradients: larger
    val_size: int = key(5000, integer(1), "the first this many training images validate")
    # rows, columns: 28 steps of 28 pixels; pixels: 784 steps of 1; permuted: pixels, shuffled
    view: str = key("rows", one_of(*VIEWS), "rows, columns (28 x 28), pixels, permuted (784 x 1)")
    shift: int = key(2, integer(0, 27), "move training images up to this many pixels (0: off)")
    # kept apart from seed: the task stays fixed while the seed varies
    permutation_seed: int = key(0, UINT32, "the pixel order of view=permuted")
    download: bool = key(True, BOOL, "fetch missing files from the mirrors (MD5-checked)")


DOTTED = r"(\w+\.)+\w+"  # a class by its module's dotted path: my_cells.MinimalGRU


@dataclass
class Model:
    """rnnexp.models.classifier.SequenceClassifier's arguments (`model.*`); every model= option sets its cell."""

    _target_: str = "rnnexp.models.classifier.SequenceClassifier"
    # rnn, lstm, gru (fused kernels), a step-wise built-in (STEPWISE_CELLS) or a cell class's dotted path;
    # a dotted path's class and its cell_args are checked where the model is built (rnnexp.models.recurrent)
    cell: str = key(
        "???",
        (
            lambda v: isinstance(v, str) and (v in CELLS + STEPWISE_CELLS or re.fullmatch(DOTTED, v) is not None),
            f"one of {', '.join(CELLS + STEPWISE_CELLS)}, or the dotted path of a cell class (my_cells.MinimalGRU)",
        ),
        "a model= option's cell, or a cell class's dotted path",
    )
    hidden_size: int = key(128, integer(1), "units per layer (and direction)")
    layers: int = key(1, integer(1), "stacked recurrent layers")
    bidirectional: bool = key(False, BOOL, "read each sequence both ways")
    dropout: float = key(0.0, number(0, 1), "between stacked layers")
    nonlinearity: str = key("tanh", one_of("tanh", "relu"), "rnn only: tanh or relu")
    # TensorFlow's BasicLSTMCell: 1.0
    forget_bias: float = key(0.0, number(), "lstm only: added to the forget gate's bias")
    input_projection: int | None = key(None, optional(integer(1)), "size of a Linear layer before the core, or null")
    init: str = key("default", one_of(*INITIALIZERS), "the core's initializer (fused kernels only)")
    readout_init: str = key("default", one_of(*INITIALIZERS), "the readout's initializer")
    projection_init: str = key("default", one_of(*INITIALIZERS), "the input projection's initializer")
    cell_args: dict = key(
        {},
        (lambda v: isinstance(v, Mapping), "the cell's settings, e.g. {dt: 0.5}"),
        "a step-wise cell's own settings (+model.cell_args.dt=0.5)",
    )
    residual: bool = key(False, BOOL, "step-wise: each upper layer adds its input")


@dataclass
class Optimizer:
    """The optimizer group's keys (`optimizer.*`), each option's values in its file (conf/optimizer/);
    which of them each class takes: OPTIMIZERS."""

    lr: float = key(rule=POSITIVE, help="learning rate (onecycle's peak)")
    weight_decay: float = key(rule=number(0), help="L2 penalty (adamw: decoupled)")
    momentum: float = key(rule=number(0), help="sgd's momentum")
    dampening: float = key(rule=number(0, 1, high_open=False))
    alpha: float = key(rule=number(0, 1))  # RMSprop's smoothing: 1 would never update the square average
    eps: float = key(rule=POSITIVE)
    betas: list = key(rule=(_betas, "two numbers >= 0 and < 1, e.g. [0.9,0.999]"))
    amsgrad: bool = key(rule=BOOL)
    nesterov: bool = key(rule=BOOL)
    centered: bool = key(rule=BOOL)
    maximize: bool = key(rule=BOOL)
    capturable: bool = key(rule=BOOL)
    differentiable: bool = key(rule=BOOL)
    decoupled_weight_decay: bool = key(rule=BOOL)
    foreach: bool | None = key(rule=OPTIONAL_BOOL)
    fused: bool | None = key(rule=OPTIONAL_BOOL)


# Each optimizer's keyword arguments, in its constructor's order (held to it by a test), less `params`.
OPTIMIZERS = {
    "torch.optim.Adam": (
        "lr", "betas", "eps", "weight_decay", "amsgrad", "foreach", "maximize", "capturable", "differentiable",
        "fused", "decoupled_weight_decay",
    ),
    "torch.optim.AdamW": (
        "lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused",
    ),
    "torch.optim.SGD": (
        "lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach", "differentiable", "fused",
    ),
    "torch.optim.RMSprop": (
        "lr", "alpha", "eps", "weight_decay", "momentum", "centered", "capturable", "foreach", "maximize",
        "differentiable",
    ),
}  # fmt: skip


@dataclass
class Scheduler:
    """The scheduler group's keys (`scheduler.*`), each option's values in its file (conf/scheduler/)."""

    max_lr: float = key(rule=POSITIVE, help="onecycle's peak, optimizer.lr unless set")
    pct_start: float = key(rule=number(0, 1, low_open=True), help="onecycle's share of the run spent warming up")
    eta_min: float = key(rule=number(0), help="cosine's final learning rate")


@dataclass
class Trainer:
    """Lightning 2.6's Trainer arguments (`trainer.*`), in its order, less logger, callbacks and plugins (rnnexp
    passes those from their groups); conf/trainer/cpu.yaml starts from these, gpu, auto and ddp from cpu."""

    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = key("cpu", None, "cpu, gpu, auto, ...")
    strategy: str = key(help="ddp (ddp_spawn and ddp_fork are refused)")
    devices: int | str = key(1, None, "devices (ddp: one process each; -1: all)")
    num_nodes: int = key()
    # auto: bf16-mixed on bfloat16 hardware for a model with enough work per step (rnnexp/precision.py), else 32-true
    precision: str | int = key(
        "auto",
        (
            lambda v: (isinstance(v, str) or is_int(v)) and v in PRECISIONS,
            f"one of {', '.join(dict.fromkeys(map(str, PRECISIONS)))}",
        ),
        "auto (README: Precision) or one of Lightning's",
    )
    fast_dev_run: bool | int = key()
    max_epochs: int = key(20, EPOCHS_OR_STEPS, "epochs to train; -1: no limit")
    min_epochs: int = key()
    # optimizer steps; training stops at this or max_epochs, whichever comes first
    max_steps: int = key(-1, EPOCHS_OR_STEPS, "optimizer steps to train; -1: no limit")
    min_steps: int = key()
    max_time: str = key()
    # Counted in batches (optimizer steps) whatever steps_per_call is: max_steps, min_steps and log_every_n_steps by
    # the module (global_step), val_check_interval by rnnexp.train.validate_by_batches, limit_train_batches by
    # rnnexp.data.datamodule, which cuts the epochs; overfit_batches is refused (REFUSED).
    limit_train_batches: int | float | None = key(
        rule=(
            lambda v: v is None or is_int(v) and v >= 1 or isinstance(v, float) and 0 < v <= 1,
            "null, a number of batches >= 1, or a fraction of the epoch > 0 and <= 1",
        ),
        help="batches an epoch (or a fraction of it)",
    )
    limit_val_batches: int | float = key()
    limit_test_batches: int | float = key()
    limit_predict_batches: int | float = key()
    overfit_batches: int | float = key()
    val_check_interval: int | float = key(help="validate every that many batches (or epoch share)")
    check_val_every_n_epoch: int = key()
    num_sanity_val_steps: int = key()
    log_every_n_steps: int = key(50, integer(1), "log training metrics every that many batches")
    enable_checkpointing: bool = key(rule=OPTIONAL_BOOL)
    enable_progress_bar: bool = key(rule=OPTIONAL_BOOL)
    # rnnexp.train says the model in one line (its parameter count)
    enable_model_summary: bool = key(False, OPTIONAL_BOOL, "Lightning's summary table, besides the model line")
    accumulate_grad_batches: int = key(1)  # refused unless 1 (REFUSED)
    gradient_clip_val: float | None = key(None)  # refused unless null or 0 (REFUSED)
    gradient_clip_algorithm: str = key()
    deterministic: bool | str | None = key(
        False,
        (lambda v: v is None or isinstance(v, bool) or v == "warn", "true, false, warn or null"),
        "deterministic kernels (slower)",
    )
    benchmark: bool = key(rule=OPTIONAL_BOOL)
    inference_mode: bool = key(rule=OPTIONAL_BOOL)
    use_distributed_sampler: bool = key(rule=OPTIONAL_BOOL)
    profiler: str = key()
    detect_anomaly: bool = key(rule=OPTIONAL_BOOL)
    barebones: bool = key(rule=OPTIONAL_BOOL)
    sync_batchnorm: bool = key(rule=OPTIONAL_BOOL)
    reload_dataloaders_every_n_epochs: int = key()
    default_root_dir: str = key("${paths.run_dir}")
    enable_autolog_hparams: bool = key(rule=OPTIONAL_BOOL)
    model_registry: str = key()


# Trainer arguments rnnexp cannot honour, each with the values that leave it off and the rest of the one line
# that refuses any other ({} is the value given). Never offered (rnnexp.help leaves them out of --help).
REFUSED = {
    "trainer.gradient_clip_val": (
        (None, 0),
        "Lightning's clipping does not work with rnnexp's manual optimization; use grad_clip={} (max global "
        "gradient norm)",
    ),
    "trainer.accumulate_grad_batches": (
        (1,),
        "gradient accumulation is not supported (rnnexp optimizes by hand, one step per batch); use a larger "
        "data.batch_size instead",
    ),
    "trainer.overfit_batches": (
        (0, 0.0),
        "not supported (Lightning would count training steps of steps_per_call batches, and cannot turn off the "
        "shuffling of rnnexp's batches); to train on fewer batches an epoch use trainer.limit_train_batches",
    ),
}


@dataclass
class Logger:
    """rnnexp.tensorboard.TensorBoardLogger's keys (`logger.*`): event files in the run folder itself."""

    _target_: str = "rnnexp.tensorboard.TensorBoardLogger"
    save_dir: str = key("${paths.run_dir}")
    name: str = key("")
    version: str = key("")
    default_hp_metric: bool = key(False, BOOL, "Lightning's hp_metric placeholder in HParams")


@dataclass
class BestCheckpoint:
    """`callbacks.checkpoint`: the best epoch by validation accuracy (first: trainer.checkpoint_callback)."""

    _target_: str = "rnnexp.checkpoint.BestCheckpoint"  # Lightning's ModelCheckpoint, saved in order with last.ckpt
    dirpath: str = key("${paths.run_dir}/checkpoints")
    filename: str = key("epoch{epoch:03d}-val_acc{val/acc:.4f}")
    auto_insert_metric_name: bool = key(False, BOOL)
    monitor: str = key("val/acc")
    mode: str = key("max")
    enable_version_counter: bool = key(False, BOOL)  # a resumed run rewrites the same file, not epoch...-v1.ckpt


@dataclass
class LastCheckpoint:
    """`callbacks.last`: last.ckpt, what a killed run resumes from."""

    _target_: str = "rnnexp.checkpoint.LastCheckpoint"
    dirpath: str = key("${paths.run_dir}/checkpoints")
    every_n_steps: int | None = key(None, optional(integer(1)), "write last.ckpt every that many steps")
    every_seconds: float | None = key(60, optional(POSITIVE), "write last.ckpt every that much training time")


@dataclass
class ProgressBar:
    """`callbacks.progress_bar`."""

    _target_: str = "rnnexp.progress.progress_bar"
    # redrawing every step costs measurable time on short steps
    refresh_rate: int = key(20, integer(1), "the bar's redraws, in steps")


@dataclass
class Samples:
    """`callbacks.samples`: misclassified validation images in TensorBoard."""

    _target_: str = "rnnexp.tensorboard.PredictionSamples"
    count: int = key(16, integer(1), "misclassified validation images shown")  # none: ~callbacks.samples


# Where each dataclass's keys sit in a composed config, in the order --help lists them.
SECTIONS: dict[str, type] = {
    "": Run,
    "paths": Paths,
    "data": Data,
    "model": Model,
    "optimizer": Optimizer,
    "scheduler": Scheduler,
    "trainer": Trainer,
    "logger": Logger,
    "callbacks.checkpoint": BestCheckpoint,
    "callbacks.last": LastCheckpoint,
    "callbacks.progress_bar": ProgressBar,
    "callbacks.samples": Samples,
}


def _keys():
    for path, cls in SECTIONS.items():
        for f in fields(cls):
            if not f.name.startswith("_"):
                yield (f"{path}.{f.name}" if path else f.name), f


RULES: dict[str, Rule] = {name: f.metadata["rule"] for name, f in _keys() if f.metadata["rule"] is not None}
HELP: dict[str, str] = {name: f.metadata["help"] for name, f in _keys() if f.metadata["help"] is not None}


def _default(f) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


# What a composed config holds that is no user's setting: each group's wiring, the run's own record.
WIRING = ("_target_", "_partial_") + tuple(
    name for name, f in _keys() if f.metadata["help"] is None and _default(f) != ABSENT and name not in REFUSED
)

# The keyword arguments each group's class takes from its config, by `_target_`; what rnnexp passes itself is
# left out (the model's input_size and num_classes, the optimizer's params, the data's seed: the run's).
SETTINGS: dict[str, tuple[str, ...]] = {
    **{cls._target_: tuple(f.name for f in fields(cls) if f.name != "_target_") for cls in (Data, Model, Trainer)},
    **OPTIMIZERS,
}


def node(cls: type) -> dict:
    """A dataclass's keys that have a default, with it: a config node (interpolations left as text)."""
    return {f.name: _default(f) for f in fields(cls) if _default(f) != ABSENT}


# The nodes conf/ starts from. Plain dicts, not structured configs: the rules above say what a value may
# be (in rnnexp's words), and a Trainer argument the node lacks can still be added with `+`.
BASES = {
    "run_base": {**node(Run), "paths": node(Paths)},
    "data_base": node(Data),
    "model_base": node(Model),
    "trainer_base": node(Trainer),
    "logger_base": node(Logger),
    "callbacks_base": {
        "checkpoint": node(BestCheckpoint),
        "last": node(LastCheckpoint),
        "progress_bar": node(ProgressBar),
        "samples": node(Samples),
    },
}


def register() -> None:
    """Put BASES into Hydra's ConfigStore (`defaults: [/model_base@_here_]` in an option file)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, base in BASES.items():
        store.store(name=name, node=base)


register()
