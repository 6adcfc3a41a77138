"""The end of a sweep: how its jobs ended (completed, pruned, failed with each reason, ...) and the
best, printed and saved as summary.yaml in the sweep folder. (An Optuna search says the same of its
whole study too, in optimization_results.yaml, and prints the one `Best:` line: the study's best,
which may be another sweep's trial and is chosen in the study's direction.)

A Hydra callback (conf/train.yaml's hydra.callbacks) whose summary is due once the sweep has
ended, however: Hydra's grid sweeper raises a failed job's error before it calls on_multirun_end.
rnnexp.run.main writes it as the entry point returns (`write_pending`), and, for a sweep started
otherwise, at the process's exit.
"""

from __future__ import annotations

import atexit
import logging
from collections import Counter
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rnnexp.errors import OutputError
from rnnexp.record import RunRecord, cannot_write, process_alive, write_atomic

log = logging.getLogger("rnnexp")

SUMMARY = "summary.yaml"
STUDY_RESULTS = "optimization_results.yaml"  # an Optuna search's (hydra_plugins/rnnexp_sweepers), which says the best


def _number(name: str) -> tuple[int, str]:
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else -1, name)


def summarize(sweep_dir: str | Path, metric: str) -> dict:
    """Read every job folder's metrics.json; print and save what they say."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():  # stopped before the first job
        return {}
    jobs = sorted(
        (d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: _number(d.name)
    )
    statuses, failures, scored = Counter(), [], []
    for job in jobs:
        try:
            record = RunRecord.read(job)
        except OutputError as err:
            record = {"status": "failed", "reason": "unreadable", "error": str(err)}
        status = record.get("status", "not started")  # no metrics.json: refused before it started
        if status == "running" and not process_alive(record, job):
            status = "killed"
        statuses[status] += 1
        if status in ("failed", "killed"):
            failures.append({"job": job.name, "reason": record.get("reason", status), "error": record.get("error", "")})
        value = record.get(metric)
        if status == "completed" and isinstance(value, (int, float)):
            scored.append((value, job.name))
    summary: dict = {"jobs": len(jobs), **dict(statuses), "failures": failures}
    counts = ", ".join(f"{n} {s}" for s, n in statuses.items())
    log.info(f"Sweep {sweep_dir}: {len(jobs)} jobs" + (f": {counts}" if counts else ""))
    for f in failures:
        log.info(f"  {f['job']} failed ({f['reason']}): {f['error'][:300]}")
    if scored:
        value, name = (min if "loss" in metric else max)(scored)
        # to the precision the metric carries (an accuracy over 10,000 images: 4 decimals), not float32's noise
        summary["best"] = {"job": name, metric: round(value, 4)}
        if not (sweep_dir / STUDY_RESULTS).exists():  # a search printed its study's best: one Best line
            log.info(f"Best: {name}, {metric}={value:.4f}")
    try:
        write_atomic(sweep_dir / SUMMARY, yaml.safe_dump(summary, sort_keys=False))
    except OSError as err:  # at exit, after the sweep's own ending: said in a line, not a traceback
        log.warning(cannot_write(sweep_dir / SUMMARY, err))
    return summary


_pending: list[tuple[str, str]] = []  # (sweep folder, metric) of the sweeps started and not yet summarized


def write_pending() -> None:
    """Summarize every sweep this process started since the last call (after the sweep, whether or
    not a job failed)."""
    while _pending:
        summarize(*_pending.pop(0))


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not _pending:
            atexit.register(write_pending)  # a no-op where the entry point wrote it already
        _pending.append((str(config.hydra.sweep.dir), str(config.get("optimized_metric", "val/acc_best"))))
