"""How much faster a training step is in bf16-mixed than in float32, over a grid of model shapes, beside
what trainer.precision=auto's rule (rnnexp/precision.py) decides for each.

    python benchmarks/precision_rule.py                  # rnn/lstm/gru x hidden 32-256 x batch 32-256 (48 cells)
    python benchmarks/precision_rule.py --quick          # 12 cells, a few seconds each
    python benchmarks/precision_rule.py --device cuda --view pixels --budget 1.0

Each cell builds the model trainer.precision=auto judges (rnnexp's SequenceClassifier, one layer, on
random inputs shaped as the view's sequences) and times its training step (forward, cross-entropy,
backward, Adam) in float32, then under bfloat16 autocast, then in float32 again (the faster of the two:
both measured warm, in turn); each is the best of repeated timings within --budget seconds, after
warm-up. A measurement says bf16-mixed where the speedup is at least MARGIN, float32 where it is below
1, either in between; the cells where the rule says otherwise are listed at the end, with the MIN_WORK
that would disagree least on this machine. Run it on a quiet machine: on a busy one the timings, and
so the speedups, are noise. This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from rnnexp import precision
from rnnexp.models.classifier import SequenceClassifier
from rnnexp.run import _cpu_name

SEQUENCES = {"rows": (28, 28), "pixels": (784, 1)}  # (steps, features) of each view (columns, permuted: alike)


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool, budget: float = 0.3) -> float:
    """Seconds per training step (forward, backward, Adam) of `model` on one batch, after warm-up:
    the best of repeated timings within about `budget` seconds."""
    optimizer = torch.optim.Adam(model.parameters())
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    sync()
    best, spent = float("inf"), 0.0
    while spent < budget or best == float("inf"):
        start = time.perf_counter()
        for _ in range(3):
            step()
        sync()
        seconds = time.perf_counter() - start
        best, spent = min(best, seconds / 3), spent + seconds
    return best


def measure(cell: str, hidden: int, batch: int, view: str, device: str, budget: float) -> tuple[float, float]:
    """Seconds per training step of that model in float32 and in bf16-mixed (infinite where bf16-mixed
    fails: oneDNN has no bfloat16 LSTM for a CPU without AVX-512, for one)."""
    torch.manual_seed(0)
    steps, features = SEQUENCES[view]
    model = SequenceClassifier(features, cell=cell, hidden_size=hidden).to(device).train()
    x, y = torch.rand(batch, steps, features, device=device), torch.randint(0, 10, (batch,), device=device)
    fp32 = step_seconds(model, x, y, bf16=False, budget=budget)
    try:
        bf16 = step_seconds(model, x, y, bf16=True, budget=budget)
    except RuntimeError as err:
        print(f"bf16-mixed fails for {cell.upper()}-{hidden} at batch {batch}: {str(err)[:100]}", file=sys.stderr)
        bf16 = float("inf")
    return min(fp32, step_seconds(model, x, y, bf16=False, budget=budget)), bf16


def disagrees(bf16_by_rule: bool, speedup: float) -> bool:
    """The rule says bf16-mixed where bf16 measured slower, or float32 where bf16 measured MARGIN faster."""
    return speedup < 1 if bf16_by_rule else speedup >= precision.MARGIN


def least_disagreeing(rows: list[dict]) -> tuple[float, int]:
    """The MIN_WORK (one of the cells' works, or above them all) that disagrees with the fewest of these
    measurements; of equals, the largest (float32's side); and how many it disagrees with."""
    candidates = sorted({r["work"] for r in rows} | {float("inf")})
    counts = [(sum(disagrees(r["work"] >= t, r["speedup"]) for r in rows), -t) for t in candidates]
    count, threshold = min(counts)
    return -threshold, count


def header(device: str) -> str:
    where = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    flags = f", bfloat16 flags: {' '.join(precision.cpu_bf16_flags()) or 'none'}" if device == "cpu" else ""
    hardware = "yes" if precision.bf16_hardware(device) else "no"
    threads = f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    return f"torch {torch.__version__}, {threads}, on {device}: {where} (bfloat16 hardware: {hardware}{flags})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(header(args.device))
    least = precision.MIN_WORK.get(args.device)
    print(f"rule: bf16-mixed from MIN_WORK[{args.device!r}] = {least} multiply-adds per sequence step; "
          f"a measurement: bf16-mixed from {precision.MARGIN}x, float32 below 1x")  # fmt: skip
    cells, sizes = ("rnn", "lstm", "gru"), (32, 128) if args.quick else (32, 64, 128, 256)
    hardware = precision.bf16_hardware(args.device)
    print("| cell | hidden | batch | work (M) | float32 ms | bf16-mixed ms | speedup | rule |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for cell in cells:
        for hidden in sizes:
            for batch in sizes:
                fp32, bf16 = measure(cell, hidden, batch, args.view, args.device, args.budget)
                shape = precision.Shape(cell, hidden, 1, False, SEQUENCES[args.view][1], batch)
                rule, _ = precision.decide(args.device, hardware, shape)
                row = {"shape": shape, "work": shape.work(), "speedup": fp32 / bf16, "rule": rule}
                rows.append(row)
                bf16_ms = f"{bf16 * 1e3:.2f}" if bf16 < float("inf") else "fails"
                print(f"| {cell} | {hidden} | {batch} | {row['work'] / 1e6:.2f} | {fp32 * 1e3:.2f} | {bf16_ms} "
                      f"| {row['speedup']:.2f}x | {rule} |", flush=True)  # fmt: skip
    wrong = [r for r in rows if disagrees(r["rule"] == "bf16-mixed", r["speedup"])]
    print(f"\nrule and measurement disagree (beyond 1x-{precision.MARGIN}x) in {len(wrong)} of {len(rows)} cells")
    for r in wrong:
        print(f"  {r['shape']}: {r['work'] / 1e6:.2f}M, {r['speedup']:.2f}x, rule {r['rule']}")
    threshold, count = least_disagreeing(rows)
    print(f"MIN_WORK[{args.device!r}] that disagrees least with these measurements: {threshold:,.0f} ({count} cells)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="hidden 32/128 x batch 32/128 only (12 cells)")
    parser.add_argument("--view", default="rows", choices=list(SEQUENCES), help="the inputs' sequence shape")
    parser.add_argument("--budget", type=float, default=0.3, help="seconds of timing per precision and cell")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
