"""Hydra's sweep grammar (choice, range, interval, tag(log, ...)) as Optuna distributions, through
Hydra's public override parser, with each form's documented meaning:

- `choice(a, b, ...)` and `a,b,...`: CategoricalDistribution of those values;
- `range(start, stop[, step])`: the values Hydra's range yields, `stop` EXCLUDED (`range(1,4)` is
  1, 2, 3): IntDistribution(low, high, step) of ints, FloatDistribution(low, high, step) of floats;
- `interval(a, b)`: FloatDistribution(a, b); IntDistribution where both bounds are written as
  integers or the interval is tagged `int`;
- `tag(log, interval(...))` (or `tag(log, range(...))` of step 1): the same on a log scale;
- anything else (a plain value, a config group, `+key=...`, `~key`) is passed to every trial as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from rnnexp.errors import ConfigError

_INT_INTERVAL = re.compile(r"interval\(\s*[-+]?\d+\s*,\s*[-+]?\d+\s*\)")
_PLAIN = re.compile(r"[A-Za-z_][\w.\-/]*")
_KEYWORDS = {"true", "false", "null", "inf", "nan"}


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)  # param name -> distribution
    keys: dict[str, str] = field(default_factory=dict)  # param name -> its override key (`+key` where added)
    fixed: dict[str, str] = field(default_factory=dict)  # key or group -> its override as written

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then each parameter's value (a parameter a
        custom_search_space suggested is a plain `key=value`)."""
        swept = [f"{self.keys.get(name, name)}={format_value(value)}" for name, value in params.items()]
        return [*(line for key, line in self.fixed.items() if key not in params), *swept]


def parse(lines: list[str]) -> SearchSpace:
    """The search space of these overrides, later ones replacing earlier ones of the same key."""
    space = SearchSpace()
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as err:  # hydra's OverrideParseException: which override, and the parser's complaint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"{getattr(err, 'override', None) or ' '.join(lines)}: not Hydra's override grammar ({first}); see "
            "https://hydra.cc/docs/advanced/override_grammar/extended"
        ) from err
    for override in parsed:
        name = override.key_or_group
        space.distributions.pop(name, None)
        space.fixed.pop(name, None)
        if override.is_sweep_override():
            space.distributions[name] = distribution(override)
            space.keys[name] = override.get_key_element()
        else:
            space.fixed[name] = override.input_line
    return space


def distribution(override: Override) -> BaseDistribution:
    value, line = override.value(), override.input_line
    tags = set(getattr(value, "tags", set()) or ())
    log = "log" in tags
    if isinstance(value, ChoiceSweep):
        bad = [v for v in value.list if not (v is None or isinstance(v, (bool, int, float, str)))]
        if bad:
            raise ConfigError(
                f"{line}: a search's choice takes plain values (numbers, strings, booleans), not {bad[0]!r}"
            )
        if log:
            raise ConfigError(f"{line}: tag(log, ...) applies to an interval or a range, not a choice")
        return CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())  # Hydra's own range: stop excluded, any step sign
        if not values:
            raise ConfigError(f"{line}: an empty range (its stop is excluded); widen it")
        low, high, step = min(values), max(values), abs(value.step)
        if log and step != 1:
            raise ConfigError(f"{line}: a range on a log scale needs step 1 (Optuna's log scale has no step)")
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return IntDistribution(low, high, log=log, step=1 if log else step)
        if log:
            return FloatDistribution(float(low), float(high), log=True)
        return FloatDistribution(float(low), float(high), step=float(step))
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise ConfigError(f"{line}: an interval needs a start below its end")
        if "int" in tags or _INT_INTERVAL.search(line):
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise ConfigError(f"{line}: a search takes choice(...), range(...) or interval(...), not this sweep")


def from_search_space(search_space: dict[str, Any]) -> SearchSpace:
    """hydra-optuna-sweeper's older `search_space` form: {name: {type: float|int|categorical, low,
    high, step, log, choices}}."""
    space = SearchSpace()
    for name, spec in (search_space or {}).items():
        spec = dict(spec)
        kind = spec.pop("type", None)
        try:
            if kind == "categorical":
                space.distributions[name] = CategoricalDistribution(list(spec["choices"]))
            elif kind == "int":
                space.distributions[name] = IntDistribution(**spec)
            elif kind == "float":
                space.distributions[name] = FloatDistribution(**spec)
            else:
                raise ValueError(f"type {kind!r}: one of float, int, categorical")
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"hydra.sweeper.search_space.{name}: {err}") from err
    return space


def format_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back: the same value and type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
