"""trainer.precision=auto: bf16-mixed where the device has bfloat16 arithmetic and the model is large
enough to gain from it, float32 elsewhere; decided by a rule, never by timing.

bfloat16 is not faster everywhere: on a CPU without bfloat16 instructions it is emulated and slower,
and even on one with them (AVX-512 BF16, AMX) a small model's matrix products are too small to gain
(see MIN_WORK for the measurements). So `auto` computes how much work a training step's recurrent
core does per sequence step (Shape.work: batch x gates x hidden x (inputs + hidden)) and takes
bf16-mixed from MIN_WORK on. The decision is a pure function of the device kind, whether it has
bfloat16 hardware, the model's shape and the batch size (`decide`): the same config on the same
machine always trains in the same precision, however busy the machine, and every process of a
several-device run computes the same answer itself. `python benchmarks/precision_rule.py` measures
the speedup over a grid of shapes and prints where the rule and the measurement disagree. The
accuracy bf16-mixed keeps is measured, not assumed: README, "Precision".

A resumed run keeps the precision its checkpoint was trained in (checkpoint["precision"]), so that
it continues exactly whatever the rule says now.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("rnnexp")

AUTO = "auto"

# bf16-mixed from this many multiply-adds per sequence step (Shape.work), per device kind; None: never.
# cpu: measured with this module's former start-up timing (a training step: forward, backward, Adam;
# now benchmarks/precision_rule.py), torch 2.13.0, 2 threads. AMD EPYC with AVX-512 BF16: LSTM-128 at
# batch 128 (10.2M) 7.9 ms in float32, 5.9 ms in bf16-mixed (1.32-1.60x faster in bf16 over several runs);
# LSTM-32 at batch 32 (0.25M) 1.30 ms against 1.53 ms (0.89x: float32 wins). Intel Xeon with AMX: LSTM-128
# at batch 128 10.0 ms against 5.3 ms (1.89x). Taking the speedup as linear in log(work) between the two
# EPYC points, it reaches MARGIN at about 1.35M (0.95M-2.3M over LSTM-128's 1.60x-1.32x); rounded up, to
# float32's side (near the line float32 loses little time and no precision). Provisional: the grid of
# benchmarks/precision_rule.py, run on a quiet machine, is to set it.
# cuda: not measured (no GPU was lent to this project): float32 until the benchmark has been run there.
MIN_WORK: dict[str, int | None] = {"cpu": 2_000_000, "cuda": None}
MARGIN = 1.15  # what MIN_WORK aims at: bf16-mixed where a step is at least this much faster (it rounds)

GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # matrix products of hidden_size rows per cell and step
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 bfloat16 arithmetic, as Linux's /proc/cpuinfo names it
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Shape:
    """What the work of a training step depends on: the recurrent core and the batch size."""

    cell: str  # lstm, gru or rnn
    hidden_size: int
    layers: int
    bidirectional: bool
    input_size: int  # features per sequence step the core reads: the view's (28 or 1), or input_projection
    batch_size: int

    @classmethod
    def of(cls, model: nn.Module, batch_size: int) -> Shape | None:
        """The shape of `model`'s recurrent core (its first nn.RNN, nn.LSTM or nn.GRU), or None if it has none."""
        core = next((m for m in model.modules() if isinstance(m, nn.RNNBase)), None)
        if core is None:
            return None
        cell = {"LSTM": "lstm", "GRU": "gru"}.get(core.mode, "rnn")
        return cls(cell, core.hidden_size, core.num_layers, core.bidirectional, core.input_size, batch_size)

    def work(self) -> float:
        """Multiply-adds of one layer's matrix products at one sequence step, averaged over the layers
        and directions: batch x gates x hidden x (inputs + hidden). The size of the products decides
        whether bfloat16 gains; more of them of the same size do not change the ratio, nor does the
        number of sequence steps (both precisions take them all)."""
        directions = 2 if self.bidirectional else 1
        inputs = [self.input_size] + [self.hidden_size * directions] * (self.layers - 1)
        per_direction = [GATES[self.cell] * self.hidden_size * (n + self.hidden_size) for n in inputs]
        return self.batch_size * sum(per_direction) / len(per_direction)

    def __str__(self) -> str:
        model = f"{self.cell.upper()}-{self.hidden_size}" + (f"x{self.layers}" if self.layers > 1 else "")
        model += " bidirectional" if self.bidirectional else ""
        return f"{model}, {self.input_size} inputs, batch {self.batch_size}"


def decide(device: str, bf16: bool, shape: Shape | None) -> tuple[str, str]:
    """bf16-mixed or 32-true for training `shape` on a device of kind `device` ("cpu", "cuda", ...)
    that has bfloat16 arithmetic in hardware (`bf16`); and why, in one line."""
    if not bf16:
        return "32-true", f"no bfloat16 arithmetic on {device}"
    least = MIN_WORK.get(device)
    if least is None:
        return "32-true", f"bf16-mixed is not measured on {device} (benchmarks/precision_rule.py measures it)"
    if shape is None:
        return "32-true", (
            "a step-wise cell (no fused nn.RNN/LSTM/GRU core, whose work the rule is measured on): float32 until "
            "bf16-mixed is measured for step-wise cells (benchmarks/cells_speed.py); set trainer.precision to choose"
        )
    work = f"{shape} on {device}: {shape.work() / 1e6:.2f}M multiply-adds per sequence step"
    if shape.work() >= least:
        return "bf16-mixed", f"{work} >= {least / 1e6:.2f}M"
    return "32-true", f"{work} < {least / 1e6:.2f}M, too few for bfloat16 to gain"


def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's bfloat16 instruction flags (BF16_CPU_FLAGS) in /proc/cpuinfo; none where it cannot be read."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                return tuple(f for f in BF16_CPU_FLAGS if f in flags)
    return ()


def bf16_hardware(device: str) -> bool:
    """Whether a device of kind `device` has bfloat16 arithmetic in hardware (not emulated): the one
    place that asks. A CPU: bfloat16 instructions, and oneDNN in torch to use them."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device == "cpu":
        return torch.backends.mkldnn.is_available() and bool(cpu_bf16_flags())
    return False


def device_of(accelerator: str) -> str:
    """The device kind trainer.accelerator names (auto: cuda if torch sees a GPU, else cpu)."""
    if accelerator in ("gpu", "cuda") or accelerator == "auto" and torch.cuda.is_available():
        return "cuda"
    return "cpu" if accelerator == "auto" else accelerator


def resolve(trainer_cfg, model: nn.Module, datamodule, resumed: str | None = None):
    """The Trainer's precision for trainer.precision: itself unless it is `auto`; for `auto`, what
    the run being resumed trained in (`resumed`, from its checkpoint), else the rule's (`decide`).
    One that cannot run this model on this device (`runnable`) is refused."""
    precision = trainer_cfg.get("precision", "32-true")
    device = device_of(str(trainer_cfg.get("accelerator", "cpu")))
    if precision != AUTO:
        runnable(str(precision), device, model, f"trainer.precision={precision}")
        log.info(f"precision: {precision} (trainer.precision)")
        return precision
    if resumed:
        runnable(resumed, device, model, f"trainer.precision=auto: the run being resumed trained in {resumed}")
        log.info(f"precision: {resumed}, as the run being resumed")
        return resumed
    chosen, why = decide(device, bf16_hardware(device), Shape.of(model, datamodule.batch_size))
    log.info(f"precision: {chosen} (trainer.precision=auto: {why})")
    return chosen


BF16 = ("bf16-mixed", "bf16-true", "bf16")


def runnable(precision: str, device: str, model: nn.Module, given: str) -> None:
    """Refuse bfloat16 for an LSTM on a CPU without bfloat16 arithmetic: oneDNN has no LSTM kernel
    for it there (`could not create a primitive descriptor`); a GRU or a vanilla RNN runs, emulated
    and slower."""
    if precision not in BF16 or device != "cpu" or bf16_hardware(device):
        return
    shape = Shape.of(model, 1)
    if shape is None or shape.cell != "lstm":
        return
    from rnnexp.errors import ConfigError, ResourceError

    flags = " or ".join(BF16_CPU_FLAGS)
    why = f"{given}, but this CPU has no bfloat16 arithmetic (no {flags} flag), where an LSTM cannot run in bfloat16"
    if given.startswith("trainer.precision=auto"):  # a checkpoint's: the run must go on in it
        raise ResourceError(f"{why}; continue it on a CPU with bfloat16 arithmetic or a GPU")
    raise ConfigError(f"{why}; use trainer.precision=32-true, or auto")
