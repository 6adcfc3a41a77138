"""The speed benchmark times both sides, one epoch each per repeat, over the same number of batches
of the same training split (each side draws its own order; its timings are not asserted)."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])  # both sides size the schedule alike
def test_benchmark_times_both_sides_each_repeat_over_as_many_batches(tiny_mnist, scheduler):
    cmd = [
        sys.executable,
        "benchmarks/train_speed.py",
        "--hidden",
        "8",
        "--batch",
        "32",
        "--batches",
        "8",
        "--repeats",
        "2",
        f"data.root={tiny_mnist}",
        "data.val_size=50",
        f"scheduler={scheduler}",
        "steps_per_call=4",
    ]  # fmt: skip  (--batches counts whole training steps: 2 of 4)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "torch " in out and "threads" in out and "batches timed per epoch 8/" in out
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [int(r[0]) for r in rows] == [1, 2]
    assert all(float(ours) > 0 and float(plain) > 0 for _, ours, plain, _ in rows)  # both sides timed every repeat
    assert re.search(r"median ratio [\d.]+ \(min [\d.]+, max [\d.]+\)", out)
    assert re.search(r"data setup: [\d.]+ s reading .*, [\d.]+ s for a sweep's next job", out)
    assert re.search(r"launch to end of first training step: [\d.]+ s", out)
