"""Seconds per training epoch of step-wise cells against the fused nn.LSTM kernel.

    python benchmarks/cells_speed.py            # rows and pixels, float32 and bf16-mixed, then every built-in cell
    python benchmarks/cells_speed.py --quick    # a few batches each: that it runs, not what it measures

The step-wise LSTM (rnnexp.models.cells.LSTMCell run by rnnexp.models.recurrent, model.cell=lstm_stepwise)
holds the fused LSTM's very weights (it computes the same: tests/test_cells.py). Each side trains
SequenceClassifier(hidden 128) on random batches of 128 with MNIST's shapes: rows (28 steps of 28
pixels) and pixels (784 steps of 1, fewer batches timed). A batch is forward, backward and an Adam
step, in float32 or under bfloat16 autocast (bf16-mixed). Seconds per epoch are a batch's median time
times MNIST's 430 training batches of 128 (55,000 images). The two sides alternate, `--batches`
batches each per repeat after an untimed warm-up, and the median of the per-repeat ratios is
reported with its spread. Then each built-in step-wise cell's epoch on rows, float32, beside the
fused LSTM's. This is a benchmark, not a test: nothing here asserts a speed, and on a shared machine
its numbers say little.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch
from torch import nn

from rnnexp.models.cells import CELLS
from rnnexp.models.classifier import SequenceClassifier

BATCHES_PER_EPOCH = math.ceil(55_000 / 128)
SHAPES = {"rows": (28, 28), "pixels": (784, 1)}  # (steps, features)


def pair(features: int, hidden: int) -> tuple[nn.Module, nn.Module]:
    """The fused LSTM classifier and its step-wise twin, with the same weights."""
    torch.manual_seed(0)
    fused = SequenceClassifier(features, cell="lstm", hidden_size=hidden)
    stepwise = SequenceClassifier(features, cell="lstm_stepwise", hidden_size=hidden)
    with torch.no_grad():
        cell = stepwise.core.cells[0]
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(fused.core, f"{name}_l0"))
        stepwise.readout.load_state_dict(fused.readout.state_dict())
    return fused, stepwise


class Trainer:
    """Times one model's training batches (forward, backward, Adam step) on fixed random data."""

    def __init__(self, model: nn.Module, steps: int, features: int, batch: int, bf16: bool):
        self.model, self.bf16 = model.train(), bf16
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.x, self.y = torch.rand(batch, steps, features), torch.randint(0, 10, (batch,))

    def step(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = nn.functional.cross_entropy(self.model(self.x).float(), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def seconds_per_batch(self, batches: int) -> float:
        times = []
        for _ in range(batches):
            start = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def compare(view: str, bf16: bool, args) -> str:
    steps, features = SHAPES[view]
    batches = max(1, args.batches // (8 if view == "pixels" else 1))
    fused, stepwise = (Trainer(m, steps, features, args.batch, bf16) for m in pair(features, args.hidden))
    try:
        fused.step(), stepwise.step()  # warm-up: allocations, oneDNN's primitives
    except RuntimeError as err:  # an LSTM in bfloat16 on a CPU without bfloat16 arithmetic
        return f"| {view} | {'bf16-mixed' if bf16 else 'float32'} | failed: {str(err).splitlines()[0][:80]} | | |"
    times: dict[str, list[float]] = {"fused": [], "stepwise": []}
    for repeat in range(args.repeats):
        order = (("fused", fused), ("stepwise", stepwise))
        for name, trainer in order if repeat % 2 == 0 else reversed(order):  # A/B, then B/A
            times[name].append(trainer.seconds_per_batch(batches) * BATCHES_PER_EPOCH)
    ratios = [s / f for s, f in zip(times["stepwise"], times["fused"])]
    fused_s, step_s = statistics.median(times["fused"]), statistics.median(times["stepwise"])
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
    precision = "bf16-mixed" if bf16 else "float32"
    return f"| {view} | {precision} | {fused_s:.1f} | {step_s:.1f} | **{statistics.median(ratios):.2f}** ({spread}) |"


def each_cell(args) -> list[str]:
    steps, features = SHAPES["rows"]
    rows = []
    for name in ["lstm", *CELLS]:
        torch.manual_seed(0)
        model = SequenceClassifier(features, cell=name, hidden_size=args.hidden)
        trainer = Trainer(model, steps, features, args.batch, bf16=False)
        trainer.step()
        seconds = statistics.median(trainer.seconds_per_batch(args.batches) for _ in range(args.repeats))
        rows.append((name, seconds * BATCHES_PER_EPOCH))
    fused = rows[0][1]
    return [f"| {name} | {s:.1f} | {s / fused:.2f} |" for name, s in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 batches, 2 repeats: that it runs")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per side and repeat (pixels: 1/8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.repeats = 2, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; batch {args.batch}, hidden {args.hidden}; seconds per epoch of "
          f"{BATCHES_PER_EPOCH} batches")  # fmt: skip
    print("\n| view | precision | fused nn.LSTM s | step-wise LSTM s | step-wise / fused (spread) |")
    print("|---|---|---|---|---|")
    for view in SHAPES:
        for bf16 in (False, True):
            print(compare(view, bf16, args), flush=True)
    print("\n| cell (rows, float32) | s per epoch | / fused lstm |")
    print("|---|---|---|")
    for row in each_cell(args):
        print(row, flush=True)


if __name__ == "__main__":
    main()
