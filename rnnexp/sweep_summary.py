"""The end of a grid sweep: how its jobs ended (completed, failed with each reason, ...) and the
best, printed and saved as summary.yaml in the sweep folder. (An Optuna search says the same of its
whole study, in optimization_results.yaml.)"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import yaml

from rnnexp.errors import OutputError
from rnnexp.record import RunRecord, process_alive, write_atomic

log = logging.getLogger("rnnexp")

SUMMARY = "summary.yaml"


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
        if status == "running" and not process_alive(record):
            status = "killed"
        statuses[status] += 1
        if status in ("failed", "killed"):
            failures.append({"job": job.name, "reason": record.get("reason", status), "error": record.get("error", "")})
        value = record.get(metric)
        if status == "completed" and isinstance(value, (int, float)):
            scored.append((value, job.name))
    summary: dict = {"jobs": len(jobs), **dict(statuses), "failures": failures}
    log.info(f"Sweep {sweep_dir}: {len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in statuses.items()))
    for f in failures:
        log.info(f"  {f['job']} failed ({f['reason']}): {f['error'][:300]}")
    if scored:
        value, name = (min if "loss" in metric else max)(scored)
        summary["best"] = {"job": name, metric: value}
        log.info(f"Best: {name}, {metric}={value:.4f}")
    write_atomic(sweep_dir / SUMMARY, yaml.safe_dump(summary, sort_keys=False))
    return summary
