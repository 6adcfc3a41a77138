"""Any recurrent cell run over time: stacked, bidirectional, with dropout and residual connections
between layers (Keras's `RNN(cell)`), and the cell named by `model.cell` checked before it is built.

A cell is a plain `nn.Module`:

    hidden_size, output_size                 ints: the state's width, and what each step outputs
    initial_state(batch, device, dtype)      the state before the first step (a tensor or a tuple)
    forward(x_t, state) -> (output_t, state) one time step; x_t is (batch, features)

and optionally `inputs(x)`: what of the step depends on the input alone, for the whole sequence
(batch, steps, features) at once (one matrix product over all steps instead of one per step);
`forward` then receives that sequence's steps instead of the raw ones.

Its constructor takes `input_size` and `hidden_size` (rnnexp passes them: the features a step
brings and `model.hidden_size`); every other argument is a setting under `model.cell_args`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from rnnexp.errors import ConfigError

PASSED = ("input_size", "hidden_size")  # a cell's constructor arguments that rnnexp gives itself


def run(cell: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, object]:
    """`cell` over the sequence `x` (batch, steps, features): its outputs (batch, steps, output_size)
    and its final state."""
    if hasattr(cell, "inputs"):
        x = cell.inputs(x)
    state = cell.initial_state(x.shape[0], x.device, x.dtype)
    outputs = []
    for x_t in x.unbind(1):
        out, state = cell(x_t, state)
        outputs.append(out)
    return torch.stack(outputs, 1), state


class Recurrent(nn.Module):
    """Layers of cells, each reading the sequence the one below outputs (both directions of it,
    joined, where `bidirectional`). `dropout` acts on what a layer passes to the next (as in
    nn.LSTM: not after the top layer); with `residual` a layer above the first adds its input to its
    output (TensorFlow's ResidualWrapper; every layer above the first reads as many features as it
    outputs). `self.cells[2 * layer + direction]` is a layer's cell (its second: the reverse one)."""

    def __init__(
        self,
        make_cell: Callable[[int], nn.Module],
        input_size: int,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        residual: bool = False,
    ):
        super().__init__()
        self.layers, self.directions = layers, 2 if bidirectional else 1
        self.dropout, self.residual = dropout, residual
        self.cells = nn.ModuleList()
        size = input_size
        for _ in range(layers):
            self.cells.extend(make_cell(size) for _ in range(self.directions))
            size = self.cells[-1].output_size * self.directions
        self.cell_output_size = self.cells[-1].output_size  # one direction's
        self.output_size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's outputs (batch, steps, output_size): each direction's, joined."""
        for layer in range(self.layers):
            cells = self.cells[layer * self.directions : (layer + 1) * self.directions]
            y = run(cells[0], x)[0]
            if self.directions == 2:
                y = torch.cat([y, run(cells[1], x.flip(1))[0].flip(1)], dim=-1)
            if self.residual and layer > 0:
                y = y + x
            if self.dropout and layer < self.layers - 1:
                y = nn.functional.dropout(y, self.dropout, self.training)
            x = y
        return x

    def last(self, y: torch.Tensor) -> torch.Tensor:
        """What a classifier reads from the outputs `y`: the forward direction's last step, and the
        reverse direction's last (the sequence's first step), joined."""
        if self.directions == 1:
            return y[:, -1]
        return torch.cat([y[:, -1, : self.cell_output_size], y[:, 0, self.cell_output_size :]], dim=-1)


# --- model.cell: a built-in name or the dotted path of a class, and its settings -------------------------


def cell_class(name: str) -> type:
    """The cell class `model.cell` names: a built-in step-wise cell (rnnexp.models.cells.CELLS) or
    `package.module.Class`, importable from anywhere on the path."""
    from rnnexp.models.cells import CELLS

    if name in CELLS:
        return CELLS[name]
    module, _, attribute = name.rpartition(".")
    if not module:
        raise ConfigError(
            f"model.cell={name}: no such cell; choose rnn, lstm, gru, {', '.join(CELLS)}, or the dotted path of a "
            "cell class (my_cells.MinimalGRU)"
        )
    try:
        found = getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"model.cell={name}: no module {err.name} on the path; run from the folder that holds it or add that "
            "folder to PYTHONPATH"
        ) from err
    except AttributeError as err:
        raise ConfigError(f"model.cell={name}: module {module} has no {attribute}") from err
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise ConfigError(f"model.cell={name}: not an nn.Module class (a cell is one)")
    missing = [m for m in ("initial_state", "forward") if getattr(found, m, None) is getattr(nn.Module, m, None)]
    if missing:
        raise ConfigError(f"model.cell={name}: a cell defines {' and '.join(missing)}; see README, 'Your own cell'")
    return found


def signature(cls: type) -> str:
    """The settings a cell class takes, as its constructor declares them (rnnexp's own left out)."""
    hints = _hints(cls)
    parts = []
    for p in _settings(cls):
        text = p.name + (f": {_python(hints[p.name])}" if p.name in hints else "")
        parts.append(text + ("" if p.default is p.empty else f" = {p.default!r}"))
    return ", ".join(parts) or "none"


def check_args(cls: type, name: str, args: Mapping) -> dict:
    """`model.cell_args` for the cell class `cls` (named `name` in the config), as plain values: an
    unknown key, a value of another type than the constructor's annotation, or a missing argument
    without a default is a ConfigError naming the class's settings."""
    params = {p.name: p for p in _settings(cls)}
    args = {str(k): _plain(v) for k, v in (args or {}).items()}
    taken = [p for p in PASSED if p not in inspect.signature(cls).parameters]
    if taken:
        raise ConfigError(
            f"model.cell={name}: its constructor takes no {' or '.join(taken)}, which rnnexp passes to every cell "
            f"({', '.join(PASSED)}); add them to its __init__"
        )
    hints = _hints(cls)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values())
    for key, value in args.items():
        if key in PASSED:
            raise ConfigError(
                f"model.cell_args.{key}: rnnexp passes {key} itself (model.hidden_size, or the data's features); "
                f"remove it from model.cell_args"
            )
        if key not in params and not accepts_any:
            near = difflib.get_close_matches(key, list(params), n=1, cutoff=0.6)
            hint = f"did you mean model.cell_args.{near[0]}? " if near else ""
            raise ConfigError(
                f"model.cell_args.{key}: not an argument of {name}; {hint}its arguments: {signature(cls)}"
            )
        if key in hints and not _fits(value, hints[key]):
            raise ConfigError(
                f"model.cell_args.{key}={_show(value)}: must be {_kind(hints[key])} ({name}'s arguments: "
                f"{signature(cls)})"
            )
    missing = [p for p in params if params[p].default is inspect.Parameter.empty and p not in args]
    if missing:
        raise ConfigError(
            f"model.cell_args.{missing[0]}: {name} needs it (no default); set +model.cell_args.{missing[0]}=<value> "
            f"(its arguments: {signature(cls)})"
        )
    return args


def build(name: str, args: Mapping | None, input_size: int, hidden_size: int, **layer) -> Recurrent:
    """The Recurrent layer of the cell `name` with its checked `args` (`layer`: Recurrent's settings)."""
    cls = cell_class(name)
    kwargs = check_args(cls, name, args or {})
    return Recurrent(lambda size: cls(input_size=size, hidden_size=hidden_size, **kwargs), input_size, **layer)


def _settings(cls: type) -> list[inspect.Parameter]:
    return [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.name not in PASSED and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _hints(cls: type) -> dict:
    try:  # resolves `from __future__ import annotations` strings in the class's module
        return typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that names what cannot be imported: the value goes unchecked
        return {}


def _plain(value):
    """An OmegaConf container as plain lists and dicts (what Hydra's instantiate passes on)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _fits(value, hint) -> bool:
    """Whether `value` (from a YAML or command line: numbers, strings, booleans, null, lists, dicts)
    is of the type `hint`; a type this cannot judge passes."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        inner = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else None
        return isinstance(value, (list, tuple)) and (inner is None or all(_fits(v, inner) for v in value))
    if origin in (dict, Mapping) or hint is dict:
        return isinstance(value, dict)
    return True


def _python(hint) -> str:
    return hint.__name__ if isinstance(hint, type) and not typing.get_args(hint) else str(hint).replace("typing.", "")


KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _kind(hint) -> str:
    """What `hint` allows, in the words of rnnexp.config's messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind(a) for a in args)
    if origin is typing.Literal:
        return f"one of {', '.join(map(_show, args))}"
    return KINDS.get(hint, _python(hint))


def _show(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
