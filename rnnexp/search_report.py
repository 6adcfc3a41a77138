"""What `python -m rnnexp.report <search folder>` adds for an Optuna search (a sweep folder with
optimization_results.yaml): how much each parameter mattered, a parallel-coordinate plot of the
study's trials (search.png), and the command that trains the best trial again with its test.

Importances are Optuna's PED-ANOVA (no scikit-learn needed, unlike its default fANOVA): which values
of a parameter the best trials share, against the rest. They need a few completed trials.
"""

from __future__ import annotations

import os
import shlex
import warnings
from pathlib import Path

import yaml

RESULTS = "optimization_results.yaml"  # written by the sweeper (hydra_plugins/rnnexp_sweepers)
PLOT = "search.png"
DROPPED = ("hparams_search=", "trial=", "test=")  # how the search ran its trials, not what the best is


def is_search(folder: Path) -> bool:
    return (folder / RESULTS).is_file()


def rerun_command(folder: Path, results: dict) -> str | None:
    """`python -m rnnexp.train <the best trial's overrides> test=true`, from its job folder's
    .hydra/overrides.yaml (found in `folder` by name, wherever the sweep folder is now)."""
    best = results.get("best_run_dir")
    overrides_file = folder / Path(str(best)).name / ".hydra" / "overrides.yaml" if best else None
    if overrides_file is None or not overrides_file.is_file():
        return None
    overrides = [o for o in yaml.safe_load(overrides_file.read_text()) or [] if not o.startswith(DROPPED)]
    return shlex.join(["python", "-m", "rnnexp.train", *overrides, "test=true"])


def study_of(results: dict):
    """The study the search ran, from where optimization_results.yaml says it lives; None where it
    cannot be opened any more (moved, in memory)."""
    import optuna

    from rnnexp.storage import JOURNAL, open_storage

    storage, name = results.get("storage"), results.get("study_name")
    if not storage or not name:
        return None
    for scheme in ("sqlite:///", JOURNAL):  # a file that is gone: opening it would make a new, empty one
        if storage.startswith(scheme) and not Path(storage.removeprefix(scheme)).is_file():
            return None
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage))
    except Exception:  # noqa: BLE001 - any store that cannot be read: the report goes on without it
        return None


def importances(study) -> dict[str, float]:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            )
        except (ValueError, RuntimeError):  # too few completed trials, or one value per parameter
            return {}


def plot(path: Path, study) -> bool:
    """The study's completed trials as parallel coordinates, one line per trial coloured by its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study)
        except (ValueError, RuntimeError):
            return False
    fig = ax.figure
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return True


def report(folder: Path, out: Path) -> list[str]:
    """The lines to print for a search folder (and search.png in `out`)."""
    results = yaml.safe_load((folder / RESULTS).read_text()) or {}
    lines = [f"## Search {results.get('study_name', '')} ({folder})", ""]
    study = study_of(results)
    if study is None:
        lines.append(f"its study cannot be opened ({results.get('storage', 'no storage recorded')}): no importances")
    else:
        weights = importances(study)
        if weights:
            lines += ["Parameter importances (PED-ANOVA):", *(f"- {k}: {v:.3f}" for k, v in weights.items())]
        else:
            lines.append("importances: too few completed trials")
        if plot(out / PLOT, study):
            lines.append(f"parallel coordinates: {out / PLOT}")
    command = rerun_command(folder, results)
    if command:
        best = f"{results.get('metric')}={results.get('best_value', 0):.4f}"
        lines += [
            "",
            f"Best trial {results.get('best_trial')} ({best}), trained again with its test:",
            f"    {command}",
        ]
    return lines
