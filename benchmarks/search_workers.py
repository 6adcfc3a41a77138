"""How busy a search's workers are: a pruned Optuna search with N workers (`hydra.sweeper.n_jobs`) on
the parallel launcher, and the share of the workers' time that trials occupied.

    python benchmarks/search_workers.py                     # 12 trials, 2 workers, real MNIST
    python benchmarks/search_workers.py --trials 20 --workers 2 --epochs 3 --batches 20

Each trial's busy time is its job's, from its metrics.json `started` to that file's last write (the
job's end), whole seconds; the search's wall time is from the first job's start to the last job's
end. Busy share = sum of busy times / (workers x wall time); what is left is idle slot time (a
worker between jobs, or with nothing to do at the end). Needs the real MNIST (RNNEXP_DATA_DIR). Run
it on a quiet machine; it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rnnexp.run import _cpu_name

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="training batches per epoch")
    args = parser.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="search_workers_"))
    command = [
        sys.executable, "-m", "rnnexp.train", "-m", "hparams_search=optuna", "hydra/launcher=parallel",
        f"hydra.launcher.n_jobs={args.workers}", f"hydra.sweeper.n_jobs={args.workers}",
        f"hydra.sweeper.n_trials={args.trials}", "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.params=null",
        "model.hidden_size=choice(16,32,64)", "optimizer.lr=tag(log, interval(0.0003, 0.03))",
        f"trainer.max_epochs={args.epochs}", f"++trainer.limit_train_batches={args.batches}",
        "trainer.precision=32-true",
    ]  # fmt: skip
    env = {**os.environ, "RNNEXP_OUTPUT_DIR": str(out)}
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    (sweep,) = (out / "multirun").iterdir()
    spans, states = [], {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()):
        record = json.loads((job / "metrics.json").read_text())
        start = datetime.datetime.fromisoformat(record["started"]).timestamp()
        spans.append((start, (job / "metrics.json").stat().st_mtime))
        states[record["status"]] = states.get(record["status"], 0) + 1
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    busy = sum(end - start for start, end in spans)
    print(f"# {_cpu_name()}, {os.cpu_count()} cores; {args.workers} workers, {len(spans)} trials: {states}")
    print(f"wall {wall:.0f} s, busy {busy:.0f} s of {args.workers * wall:.0f} s of worker time: "
          f"{busy / (args.workers * wall):.0%} busy, {1 - busy / (args.workers * wall):.0%} idle")  # fmt: skip


if __name__ == "__main__":
    main()
