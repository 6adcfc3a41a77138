"""Compare runs: one table row per run, mean and spread over seeds, and their curves.

    python -m rnnexp.report outputs/multirun/2026-11-26_04-12-00_123456 [more folders] [--out DIR]

Reads what each run left in its folder (config.yaml, metrics.json, TensorBoard events); prints a
Markdown table and writes report.csv, report.md and report.png (validation accuracy and loss
curves of every run) into --out, by default the first folder given. For an Optuna search folder,
also the parameters' importances, search.png and the command that reruns the best trial
(rnnexp/search_report.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import socket
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from rnnexp.record import CONFIG, HEARTBEAT, METRICS, process_alive, write_atomic
from rnnexp.search_report import is_search
from rnnexp.search_report import report as search_report

COLUMNS = [
    "run", "seed", "status", "cell", "layers", "hidden", "params", "steps", "epochs", "train_s",
    "val_acc_best", "test_acc", "published", "diff", "published_on",
]  # fmt: skip


@dataclass
class Run:
    dir: Path
    config: dict
    metrics: dict
    problem: str | None = None  # why its config.yaml or metrics.json could not be read

    @property
    def status(self) -> str:
        if self.problem:
            return f"unreadable ({self.problem})"
        status = self.metrics.get("status", "not started")  # no metrics.json: rejected before training
        here = self.metrics.get("host") == socket.gethostname()
        # on another host a run without a heartbeat (recorded before there were any) is taken at its word
        if (
            status == "running"
            and (here or (self.dir / HEARTBEAT).exists())
            and not process_alive(self.metrics, self.dir)
        ):
            return "killed"
        return status

    @property
    def name(self) -> str:
        return self.metrics.get("experiment") or re.sub(r"^\d+_", "", self.dir.name)

    def row(self) -> dict:
        model, m, ref = _mapping(self.config.get("model")), self.metrics, _mapping(self.config.get("reference"))
        published, test_acc = ref.get("accuracy"), m.get("test/acc")
        return {
            "run": self.name,
            "seed": self.config.get("seed"),
            "status": self.status,
            "cell": model.get("cell"),
            "layers": model.get("layers"),
            "hidden": model.get("hidden_size"),
            "params": m.get("params"),
            "steps": m.get("steps"),
            "epochs": m.get("epochs"),
            "train_s": m.get("train_time_s"),
            "val_acc_best": m.get("val/acc_best"),
            "test_acc": test_acc,
            "published": published,
            "diff": test_acc - published if _number(test_acc) is not None and _number(published) is not None else None,
            "published_on": ref.get("measured_on"),
        }

    def setting(self) -> str:
        """The configuration apart from its seed, where it ran and how it was started (`resume`, which
        runs saved before config.yaml left it out hold): runs that share it are repeats."""
        rest = {k: v for k, v in self.config.items() if k not in ("seed", "paths", "resume")}
        return json.dumps(rest, sort_keys=True, default=str).replace(str(self.dir), "<run folder>")


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _number(value) -> int | float | None:
    """The value if it is a number, else None: a hand-edited file cannot break the arithmetic."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _job_order(path: Path):
    number = re.match(r"^(\d+)_", path.name)
    return (str(path.parent), int(number.group(1)) if number else -1, path.name)


def find_runs(folders: list[Path]) -> list[Run]:
    """Every run folder (one Hydra made: it has .hydra/) in or under the given folders."""
    dirs = {p.parent for folder in folders for p in folder.rglob(".hydra") if p.is_dir()}
    runs = []
    for d in sorted(dirs, key=_job_order):
        config_file = d / CONFIG if (d / CONFIG).exists() else d / ".hydra" / "config.yaml"
        problems: list[str] = []
        config = _read_mapping(config_file, yaml.safe_load, problems) if config_file.exists() else {}
        metrics = _read_mapping(d / METRICS, json.loads, problems) if (d / METRICS).exists() else {}
        runs.append(Run(d, config, metrics, "; ".join(problems) or None))
    return runs


def _read_mapping(path: Path, parse, problems: list[str]) -> dict:
    """The mapping a run's YAML or JSON file holds; {} and a one-line reason in `problems` if it holds none."""
    try:
        value = parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: JSON and Unicode decoding errors
        problems.append(f"{path.name}: {_reason(err)}")
        return {}
    if not isinstance(value, dict):
        problems.append(f"{path.name}: {'empty' if value is None else type(value).__name__}, not a mapping")
        return {}
    return value


def _reason(err: Exception) -> str:
    """A short, one-line account of why a file could not be read or parsed."""
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg}: line {err.lineno} column {err.colno}"
    mark = getattr(err, "problem_mark", None)  # YAML syntax errors
    if isinstance(err, yaml.MarkedYAMLError) and mark is not None:
        return f"{err.problem or err.context}: line {mark.line + 1} column {mark.column + 1}"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return (str(err).splitlines() or [type(err).__name__])[0]


def summarize(runs: list[Run]) -> list[dict]:
    """Mean and spread (sample standard deviation) over the completed repeats of each setting.

    Each statistic is over the repeats that have the value (runs with test=false have no test
    accuracy); `<key>_n` says how many, and the statistics are None when too few have it.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.status == "completed":
            groups.setdefault(run.setting(), []).append(run)
    rows = []
    for group in groups.values():
        if len(group) < 2:
            continue
        group_rows = [run.row() for run in group]
        first = group_rows[0]
        row = {"run": first["run"], "n": len(group), "published": _number(first["published"])}
        for key in ("test_acc", "val_acc_best", "train_s"):
            values = [v for r in group_rows if (v := _number(r[key])) is not None]
            row[f"{key}_n"] = len(values)
            row[f"{key}_mean"] = statistics.mean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
            row[f"{key}_min"], row[f"{key}_max"] = (min(values), max(values)) if values else (None, None)
        both = row["test_acc_mean"] is not None and row["published"] is not None
        row["diff"] = row["test_acc_mean"] - row["published"] if both else None
        rows.append(row)
    return rows


def _fmt(value, digits: int = 4, sign: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:{sign}.{digits}f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")  # one Markdown table cell, whatever a file held


def _spread(s: dict, key: str, digits: int, extremes: bool = False) -> str:
    """'mean ± std [min, max]' over the repeats that have the value, '(k of n)' when not all do, '-' when none."""
    if s[f"{key}_mean"] is None:
        return "-"
    std = "-" if s[f"{key}_std"] is None else f"{s[f'{key}_std']:.{digits}f}"
    text = f"{s[f'{key}_mean']:.{digits}f} ± {std}"
    if extremes:
        text += f" [{s[f'{key}_min']:.{digits}f}, {s[f'{key}_max']:.{digits}f}]"
    return text + (f" ({s[f'{key}_n']} of {s['n']})" if s[f"{key}_n"] < s["n"] else "")


def markdown(rows: list[dict], summary: list[dict]) -> str:
    out = io.StringIO()
    headers = COLUMNS[:-1]
    out.write("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n")
    for row in rows:
        cells = [_fmt(row[c], 2 if c in ("epochs", "train_s") else 4, "+" if c == "diff" else "") for c in headers]
        out.write("| " + " | ".join(cells) + " |\n")
    notes = {row["run"]: row["published_on"] for row in rows if row["published_on"]}
    if notes:
        out.write("\nPublished results were measured on: ")
        out.write("; ".join(f"{name}: {on}" for name, on in notes.items()) + ".\n")
    if summary:
        out.write("\nOver seeds (completed runs; mean ± sample standard deviation, [min, max]):\n\n")
        out.write("| run | n | test_acc | val_acc_best | train_s | published | diff |\n|---|---|---|---|---|---|---|\n")
        for s in summary:
            test, val = _spread(s, "test_acc", 4, extremes=True), _spread(s, "val_acc_best", 4)
            cells = [_fmt(s["run"]), str(s["n"]), test, val, _spread(s, "train_s", 1), _fmt(s["published"])]
            out.write("| " + " | ".join([*cells, _fmt(s["diff"], sign="+")]) + " |\n")
    return out.getvalue()


def write_csv(path: Path, runs: list[Run], rows: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["folder", *COLUMNS])
    writer.writeheader()
    for run, row in zip(runs, rows):
        writer.writerow({"folder": str(run.dir), **row})
    write_atomic(path, out.getvalue())


def curves(run: Run) -> dict[str, list[tuple[float, float]]]:
    """Scalar series from the run's event files, x in thousands of training images seen."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run.dir), size_guidance={"scalars": 0})
    acc.Reload()
    batch = _number(_mapping(run.config.get("data")).get("batch_size")) or 1
    tags = [t for t in ("val/acc", "train/loss", "val/loss") if t in acc.Tags()["scalars"]]
    return {t: [(e.step * batch / 1000, e.value) for e in acc.Scalars(t)] for t in tags}


def plot(path: Path, runs: list[Run]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(16, 5.5), layout="constrained")
    names = list(dict.fromkeys(run.name for run in runs))  # one colour per setting, its seeds alike
    for run in runs:
        series, color = curves(run), f"C{names.index(run.name) % 10}"
        label = f"{run.name} (seed {run.config.get('seed')})" + (
            "" if run.status == "completed" else f" [{run.status}]"
        )
        if "val/acc" in series:
            ax_acc.plot(*zip(*series["val/acc"]), marker=".", color=color, label=label)
        if "train/loss" in series:
            ax_loss.plot(*zip(*series["train/loss"]), color=color, alpha=0.5, linewidth=0.8)
        if "val/loss" in series:
            ax_loss.plot(*zip(*series["val/loss"]), color=color, linestyle="--", marker=".")
    ax_acc.set(title="validation accuracy", xlabel="training images seen (thousands)", ylabel="accuracy")
    ax_loss.set(title="loss (solid: train, dashed: validation)", xlabel="training images seen (thousands)")
    ax_loss.set_yscale("log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside right center", fontsize=8)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():  # a half-written image never stays behind
            tmp.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rnnexp.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--out", type=Path, help="where report.csv/.md/.png go (default: the first folder)")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        parser.error(f"no such folder: {', '.join(missing)}")
    runs = find_runs(args.folders)
    if not runs:
        parser.error(f"no runs (folders with .hydra/) in {', '.join(map(str, args.folders))}")
    out = args.out or args.folders[0]
    rows = [run.row() for run in runs]  # one look at each run's status
    table = markdown(rows, summarize(runs))
    print(table)  # shown even if the files cannot be written
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "report.md", table)
        write_csv(out / "report.csv", runs, rows)
        plot(out / "report.png", runs)
    except OSError as err:
        reason = "a file, not a folder" if out.exists() and not out.is_dir() else _reason(err)
        parser.exit(2, f"error: cannot write the report to {out}: {reason}; pass --out <a writable folder>\n")
    print(f"wrote {out / 'report.md'}, {out / 'report.csv'}, {out / 'report.png'}")
    for folder in filter(is_search, args.folders):  # an Optuna search: importances, its plot, the best again
        print("\n".join(["", *search_report(folder, out)]))


if __name__ == "__main__":
    main()
