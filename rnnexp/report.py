"""Compare runs: one table row per run, mean and spread over seeds, and their curves.

    python -m rnnexp.report outputs/multirun/2026-11-26_04-12-00_123456 [more folders] [out=DIR]

Reads what each run left in its folder (config.yaml, metrics.json, TensorBoard events); prints a
Markdown table, its runs ranked by the metric the runs optimized (best first, marked), without the
columns that are the same in every run (said once, in a line), accuracies in percent at the precision
they carry; and writes report.csv, report.md and report.png (validation accuracy, test accuracy and
loss of every run: one colour per setting, its seeds thin, their mean bold) into out=, by default
the first folder given. For an Optuna search folder,
also the parameters' importances, search.png and the command that reruns the best trial
(rnnexp/search_report.py).
"""

from __future__ import annotations

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

from rnnexp.errors import ConfigError, OutputError
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

    @property
    def group_name(self) -> str:
        """What this run shares with its other seeds: its name without its seed (`model=rnn` for
        `model=rnn,seed=1`; `defaults` where the seed is all a sweep varied)."""
        if self.metrics.get("experiment"):
            return self.metrics["experiment"]
        parts = [p for p in re.sub(r"^\d+_", "", self.dir.name).split(",") if not p.startswith("seed=")]
        return ",".join(parts) or "defaults"

    def score(self, metric: str) -> float | None:
        """The run's value of the metric the runs are ranked by, if it completed with one."""
        return _number(self.metrics.get(metric)) if self.status == "completed" else None

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
            "published_on": ref.get("measured_on") if _number(published) is not None else None,  # of a number only
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


def ranked_by(runs: list[Run]) -> str:
    """The metric the runs optimized (their config's `optimized_metric`, the most common among them)."""
    metrics = [m for run in runs if isinstance(m := run.config.get("optimized_metric"), str)]
    return max(metrics, key=metrics.count) if metrics else "val/acc_best"


def lower_is_better(metric: str) -> bool:
    return "loss" in metric


def rank(runs: list[Run], metric: str) -> list[Run]:
    """Best first by `metric`; runs without a score (not completed, or not recorded) after, in their order."""
    sign = 1 if lower_is_better(metric) else -1
    scored = sorted((r for r in runs if r.score(metric) is not None), key=lambda r: sign * r.score(metric))
    return scored + [r for r in runs if r.score(metric) is None]


def summarize(runs: list[Run], metric: str = "val/acc_best") -> list[dict]:
    """Mean and spread (sample standard deviation) over the completed repeats of each setting, best
    first by the mean of `metric`; each group named by what its runs share (Run.group_name).

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
        row = {"run": group[0].group_name, "n": len(group), "published": _number(first["published"])}
        scores = [v for run in group if (v := run.score(metric)) is not None]
        row["score"] = statistics.mean(scores) if scores else None
        for key in ("test_acc", "val_acc_best", "train_s"):
            values = [v for r in group_rows if (v := _number(r[key])) is not None]
            row[f"{key}_n"] = len(values)
            row[f"{key}_mean"] = statistics.mean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
            row[f"{key}_min"], row[f"{key}_max"] = (min(values), max(values)) if values else (None, None)
        both = row["test_acc_mean"] is not None and row["published"] is not None
        row["diff"] = row["test_acc_mean"] - row["published"] if both else None
        rows.append(row)
    sign = 1 if lower_is_better(metric) else -1
    return sorted(rows, key=lambda r: (r["score"] is None, sign * (r["score"] or 0)))


ACCURACIES = ("val_acc_best", "test_acc", "published", "diff")  # shown in percent


def _fmt(value, digits: int = 4, sign: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:{sign}.{digits}f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")  # one Markdown table cell, whatever a file held


def cell(column: str, value) -> str:
    """A table cell at the precision its number carries: accuracies in percent to 0.01 (one image in
    10,000), seconds to 0.1, epochs as integers where whole."""
    number = _number(value)
    if column in ACCURACIES and number is not None:
        return _fmt(100.0 * number, 2, "+" if column == "diff" else "")
    if column == "epochs" and number is not None and float(number).is_integer():
        return str(int(number))
    if column == "train_s" and number is not None:
        return _fmt(float(number), 1)
    return _fmt(value)


def _spread(s: dict, key: str, digits: int, extremes: bool = False, scale: float = 1.0) -> str:
    """'mean ± std [min, max]' over the repeats that have the value, '(k of n)' when not all do, '-' when none."""
    if s[f"{key}_mean"] is None:
        return "-"
    std = "-" if s[f"{key}_std"] is None else f"{scale * s[f'{key}_std']:.{digits}f}"
    text = f"{scale * s[f'{key}_mean']:.{digits}f} ± {std}"
    if extremes:
        text += f" [{scale * s[f'{key}_min']:.{digits}f}, {scale * s[f'{key}_max']:.{digits}f}]"
    return text + (f" ({s[f'{key}_n']} of {s['n']})" if s[f"{key}_n"] < s["n"] else "")


def markdown(rows: list[dict], summary: list[dict], metric: str = "val/acc_best") -> str:
    """The runs' table (rows best first, as `rank` orders them; the first marked `(best)` if it has a
    score) without the columns whose cells are the same in every row, which one line names, and the
    seed groups' table."""
    out = io.StringIO()
    headers = COLUMNS[:-1]
    cells = [{c: cell(c, row[c]) for c in headers} for row in rows]
    key = metric.replace("/", "_")
    if len(rows) > 1:  # a column all runs share says nothing about how they differ: said once instead
        same = [c for c in headers if c not in ("run", key) and len({r[c] for r in cells}) == 1]
        headers = [c for c in headers if c not in same]
        if same:
            out.write("Same in every run: " + ", ".join(f"{c}={cells[0][c]}" for c in same) + "\n\n")
    better = "lower" if lower_is_better(metric) else "higher"
    out.write(f"Ranked by {metric} ({better} is better); accuracies in %.\n\n")
    if rows and rows[0].get("best"):
        cells[0]["run"] += " (best)"
    titles = [f"{c} %" if c in ACCURACIES else c for c in headers]
    out.write("| " + " | ".join(titles) + " |\n|" + "---|" * len(headers) + "\n")
    for row in cells:
        out.write("| " + " | ".join(row[c] for c in headers) + " |\n")
    notes = {row["run"]: row["published_on"] for row in rows if row["published_on"]}
    if notes:
        out.write("\nPublished results were measured on: ")
        out.write("; ".join(f"{name}: {on}" for name, on in notes.items()) + ".\n")
    if summary:
        out.write(f"\nOver seeds (completed runs; best first by mean {metric}; mean ± sample standard deviation, ")
        out.write("[min, max]; accuracies in %):\n\n")
        out.write("| run | n | test_acc % | val_acc_best % | train_s | published % | diff % |\n")
        out.write("|---|---|---|---|---|---|---|\n")
        for k, s in enumerate(summary):
            test = _spread(s, "test_acc", 2, extremes=True, scale=100.0)
            val = _spread(s, "val_acc_best", 2, scale=100.0)
            name = _fmt(s["run"]) + (" (best)" if k == 0 and s["score"] is not None else "")
            row = [name, str(s["n"]), test, val, _spread(s, "train_s", 1), cell("published", s["published"])]
            out.write("| " + " | ".join([*row, cell("diff", s["diff"])]) + " |\n")
    return out.getvalue()


def write_csv(path: Path, runs: list[Run], rows: list[dict]) -> None:
    """Every column, best first; accuracies as fractions rounded to what they carry (4 decimals)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["folder", *COLUMNS])
    writer.writeheader()
    for run, row in zip(runs, rows):
        rounded = {c: round(v, 4) if c in ACCURACIES and isinstance(_number(v), float) else v for c, v in row.items()}
        writer.writerow({"folder": str(run.dir), **{c: rounded[c] for c in COLUMNS}})
    write_atomic(path, out.getvalue())


def curves(run: Run) -> dict[str, list[tuple[float, float]]]:
    """Scalar series from the run's event files, x in thousands of training images seen."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run.dir), size_guidance={"scalars": 0})
    acc.Reload()
    batch = _number(_mapping(run.config.get("data")).get("batch_size")) or 1
    tags = [t for t in ("val/acc", "train/loss", "val/loss") if t in acc.Tags()["scalars"]]
    return {t: [(e.step * batch / 1000, e.value) for e in acc.Scalars(t)] for t in tags}


def mean_curve(series: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """The mean of several seeds' curves at the points all of them have."""
    common = set.intersection(*(set(x for x, _ in s) for s in series))
    values: dict[float, list[float]] = {}
    for s in series:
        for x, v in s:
            if x in common:
                values.setdefault(x, []).append(v)
    return [(x, statistics.mean(values[x])) for x in sorted(values)]


def plot(path: Path, runs: list[Run]) -> None:
    """Validation accuracy with test accuracy (a star at the run's end) and the losses, in one colour
    per setting: each seed a thin line, their mean bold (over completed seeds, where there are two or more)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(16, 5.5), layout="constrained")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.setting(), []).append(run)
    for k, group in enumerate(groups.values()):
        color, several = f"C{k % 10}", len(group) > 1
        seeds = ", ".join(sorted((str(run.config.get("seed")) for run in group), key=lambda v: (len(v), v)))
        label = f"{group[0].group_name} (seed{'s' if several else ''} {seeds})"
        unfinished = [f"seed {r.config.get('seed')}: {r.status}" for r in group if r.status != "completed"]
        label += f" [{'; '.join(unfinished)}]" if unfinished else ""
        thin = {"linewidth": 0.8, "alpha": 0.45} if several else {"linewidth": 1.5}
        completed, tests = [], []
        for run in group:
            series = curves(run)
            if "val/acc" in series:
                xs, ys = zip(*series["val/acc"])
                ax_acc.plot(xs, [100 * y for y in ys], color=color, **thin)
            if (test := _number(run.metrics.get("test/acc"))) is not None and "val/acc" in series:
                tests.append((series["val/acc"][-1][0], 100 * test))
            if "train/loss" in series:
                ax_loss.plot(*zip(*series["train/loss"]), color=color, alpha=0.3, linewidth=0.6)
            if "val/loss" in series:
                ax_loss.plot(*zip(*series["val/loss"]), color=color, linestyle="--", **thin)
            if run.status == "completed":
                completed.append(series)
        if several and len(completed) > 1:
            for tag, ax, style in (("val/acc", ax_acc, "-"), ("val/loss", ax_loss, "--")):
                if all(tag in series for series in completed):
                    xs, ys = zip(*mean_curve([series[tag] for series in completed]))
                    ys = [100 * y for y in ys] if tag == "val/acc" else ys
                    ax.plot(xs, ys, color=color, linestyle=style, linewidth=2.4)
        ax_acc.plot([], [], color=color, linewidth=2.4, label=label)  # one legend entry per setting
        if tests:
            xs, ys = zip(*tests)
            ax_acc.scatter(xs, ys, color=color, marker="*", s=50, alpha=0.6 if several else 1.0, zorder=3)
            if several:
                ax_acc.scatter([max(xs)], [statistics.mean(ys)], color=color, marker="*", s=220, edgecolor="black",
                               zorder=4)  # fmt: skip
    ax_acc.set(xlabel="training images seen (thousands)", ylabel="accuracy (%)",
               title="validation accuracy (lines: seeds thin, their mean bold); test accuracy (stars)")  # fmt: skip
    ax_loss.set(title="loss (faint: train; dashed: validation, bold: its mean over seeds)",
                xlabel="training images seen (thousands)")  # fmt: skip
    ax_loss.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 2.3, not 2.3x10^0
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
    ax_loss.yaxis.set_minor_formatter(plain)
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside right center", fontsize=8)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():  # a half-written image never stays behind
            tmp.unlink()


USAGE = "python -m rnnexp.report <run or sweep folder> [<folder> ...] [out=<folder>]"


def arguments(argv: list[str]) -> tuple[list[Path], Path | None]:
    """The folders to compare and `out=`, in the style of every rnnexp entry point: key=value settings,
    the paths themselves given as they are (a sweep job's folder may hold `=`: an existing path is a
    folder)."""
    folders, out = [], None
    for arg in argv:
        key, sep, value = arg.partition("=")
        if Path(arg).exists() or not sep:
            folders.append(Path(arg))
        elif key == "out":
            if not value:
                raise ConfigError(f"out=: give a folder for report.md/.csv/.png; usage: {USAGE}")
            out = Path(value)
        else:
            raise ConfigError(f"{key}: not a setting of rnnexp.report (nor an existing folder); usage: {USAGE}")
    if not folders:
        raise ConfigError(f"no folder given; usage: {USAGE}")
    if missing := [str(f) for f in folders if not f.is_dir()]:
        raise ConfigError(f"no such folder: {', '.join(missing)}; usage: {USAGE}")
    return folders, out


def report(argv: list[str]) -> None:
    if {"-h", "--help"} & set(argv):
        print(f"{__doc__.split(chr(10) * 2)[0]}\n\nusage: {USAGE}")
        return
    folders, out = arguments(argv)
    runs = find_runs(folders)
    if not runs:
        raise ConfigError(f"no runs (folders with .hydra/) in {', '.join(map(str, folders))}")
    out = out or folders[0]
    metric = ranked_by(runs)
    runs = rank(runs, metric)  # best first
    rows = [run.row() for run in runs]  # one look at each run's status
    if rows and runs[0].score(metric) is not None:
        rows[0]["best"] = True
    table = markdown(rows, summarize(runs, metric), metric)
    print(table)  # shown even if the files cannot be written
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "report.md", table)
        write_csv(out / "report.csv", runs, rows)
        plot(out / "report.png", runs)
    except OSError as err:
        reason = "a file, not a folder" if out.exists() and not out.is_dir() else _reason(err)
        raise OutputError(f"cannot write the report to {out}: {reason}; give out=<a writable folder>") from err
    print(f"wrote {out / 'report.md'}, {out / 'report.csv'}, {out / 'report.png'}")
    for folder in filter(is_search, folders):  # an Optuna search: importances, its plot, the best again
        print("\n".join(["", *search_report(folder, out)]))


def main(argv: list[str] | None = None) -> int:
    """`python -m rnnexp.report <argv>` (default: this process's command line); returns the exit code."""
    from rnnexp import run

    return run.main(report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
