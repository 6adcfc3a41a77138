"""Evaluate a trained run on a test set: overall and per-class accuracy, a confusion matrix and the
most confidently misclassified images.

    python -m rnnexp.evaluate ckpt_path=outputs/runs/<run>            # the run's best checkpoint
    python -m rnnexp.evaluate ckpt_path=<run>/checkpoints/last.ckpt
    python -m rnnexp.evaluate ckpt_path=<run> data=fashion_mnist            # another data set, same shape
    python -m rnnexp.evaluate ckpt_path=<run> data.root=/other/mnist/copy

The model and its data come from the config the run was trained with (its checkpoint carries it):
no overrides to repeat. `data=<option>` takes another data set from conf/data/ and keeps the run's
view of it (rows, pixels, its permutation, ...); `data.<key>=<value>` changes one data setting.
Writes evaluation.json, confusion_matrix.png and misclassified.png into <run>/evaluation/ (or
evaluation-<data set>/), and adds the two figures to the run's TensorBoard.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from rnnexp import run
from rnnexp.config import CONF, options, top_level
from rnnexp.errors import ConfigError

USAGE = "python -m rnnexp.evaluate ckpt_path=<checkpoint or run folder> [data=<option>] [data.<key>=<value>]"
KEPT = ("view", "permutation_seed", "val_size", "eval_batch_size")  # how the run read its data, kept by data=


def arguments(argv: list[str]) -> tuple[str, str | None, dict]:
    """ckpt_path, the data option (or None) and data key overrides, from key=value arguments."""
    given = dict(a.split("=", 1) if "=" in a else (a, None) for a in argv)
    if "ckpt_path" not in given or not given["ckpt_path"]:
        raise ConfigError(f"ckpt_path: missing; usage: {USAGE}")
    data = given.pop("data", None)
    if data is not None and data not in options("data"):
        raise ConfigError(f"data={data}: no such option; choose one of {', '.join(options('data'))}")
    keys = {k.removeprefix("data."): v for k, v in given.items() if k.startswith("data.")}
    unknown = [k for k in given if k != "ckpt_path" and not k.startswith("data.")]
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a setting of rnnexp.evaluate; usage: {USAGE}")
    return given["ckpt_path"], data, keys


def data_config(trained: dict, option: str | None, keys: dict) -> dict:
    """The run's data config, or another option's with the run's view, with `keys` set."""
    data = dict(trained["data"])
    if option is not None:
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(str(CONF), version_base="1.3"):  # the option as a run would compose it
            other = OmegaConf.to_container(compose("train", overrides=[f"data={option}"]).data, resolve=True)
        data = {**other, **{k: data[k] for k in KEPT if k in data}}
    for key, value in keys.items():
        if key not in data:
            raise ConfigError(f"data.{key}: not a data setting; the settings are: {', '.join(data)}")
        data[key] = OmegaConf.from_dotlist([f"v={value}"]).v  # typed as on the command line
    resolved = OmegaConf.create({"data": data})
    return OmegaConf.to_container(resolved, resolve=True)["data"]


def fits(trained: dict, config: dict) -> None:
    """The data as the command line changed them must give the model as many inputs a step as it was
    trained on (data.view=pixels gives 1, rows 28)."""
    from hydra.utils import instantiate

    from rnnexp.data.datamodule import VIEWS

    def inputs(data: dict, view: str) -> int:
        return instantiate({**data, "view": view}, seed=config["seed"]).input_size

    theirs, ours = trained["data"]["view"], config["data"]["view"]
    size = inputs(trained["data"], theirs)
    if inputs(config["data"], ours) != size:
        fitting = " or ".join(f"data.view={v}" for v in VIEWS if inputs(config["data"], v) == size)
        raise ConfigError(
            f"data.view={ours}: the model reads {size} inputs a step (its run's data.view={theirs}) and {ours} gives "
            f"{inputs(config['data'], ours)}; use {fitting}, or leave data.view out"
        )


def evaluate(argv: list[str]) -> dict:
    import torch

    from rnnexp.checkpoint import autocast, restore
    from rnnexp.config import check
    from rnnexp.record import cannot_write, in_run, write_atomic

    path, option, keys = arguments(argv)
    trained, model, file = restore(path)
    config = {**trained, "data": data_config(trained, option, keys)}
    # a run that an older rnnexp let add a key of its own (+note=...) is still evaluated: the key is left out
    check(OmegaConf.create({k: v for k, v in config.items() if k in top_level()}))
    fits(trained, config)
    datamodule = datamodule_for(config)
    x, y = datamodule.splits["test"]
    with torch.no_grad(), autocast(config):  # in the precision the run tested in: the same accuracy
        logits = torch.cat([model(xb).float() for xb, _ in datamodule.test_dataloader()])
    probs = logits.softmax(-1)
    confidence, predicted = probs.max(-1)
    n = len(datamodule.classes)
    confusion = torch.bincount(y * n + predicted, minlength=n * n).view(n, n)
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    accuracy = (predicted == y).float().mean().item()

    run_dir = file.parent.parent if file.parent.name == "checkpoints" else file.parent
    out = run_dir / ("evaluation" if option is None else f"evaluation-{option}")
    result = {
        "checkpoint": in_run(file, run_dir),  # relative to the run folder where it is inside it
        "data": config["data"],
        "test_images": len(y),
        "test/acc": accuracy,
        "per_class": dict(zip(datamodule.classes, per_class)),
        "confusion_matrix": confusion.tolist(),
    }
    wrong = (predicted != y).nonzero().squeeze(1)
    worst = wrong[confidence[wrong].argsort(descending=True)][:25]
    figures = {
        "confusion_matrix": confusion_figure(confusion, datamodule.classes, accuracy),
        "misclassified": misclassified_figure(datamodule.images("test")[worst], y[worst], predicted[worst],
                                              confidence[worst], datamodule.classes),
    }  # fmt: skip
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "evaluation.json", json.dumps(result, indent=2) + "\n")
        save_figures(figures, out, run_dir, option)
    except OSError as err:  # a full disk, a run folder this user may not write to
        raise cannot_write(err.filename or out, err, elsewhere=None) from err

    data = config["data"]
    print(f"run folder  {run_dir}")
    print(f"checkpoint  {in_run(file, run_dir)}")
    print(f"data        {data.get('dataset', 'mnist')}, view {data['view']}, {len(y)} test images in {data['root']}")
    print(f"accuracy    {100 * accuracy:.2f}% ({int((predicted == y).sum())} of {len(y)} right)")
    print("per class:")
    width = max(len(c) for c in datamodule.classes)
    for name, acc, count in zip(datamodule.classes, per_class, confusion.sum(1).tolist()):
        print(f"  {name:<{width}}  {100 * acc:6.2f}%  ({count} images)")
    print("most frequent confusions (true -> predicted: images):")
    print("\n".join(f"  {line}" for line in confusions(confusion, datamodule.classes)) or "  none")
    print(f"wrote {out / 'evaluation.json'}, {out / 'confusion_matrix.png'}, {out / 'misclassified.png'}")
    return result


def confusions(confusion, classes: list[str], top: int = 5) -> list[str]:
    """The `top` most frequent mistakes, `true -> predicted: count`, most first (ties in class order)."""
    n = len(classes)
    pairs = [(confusion[i, j].item(), i, j) for i in range(n) for j in range(n) if i != j and confusion[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [f"{classes[i]} -> {classes[j]}: {count}" for count, i, j in pairs[:top]]


def datamodule_for(config: dict):
    from rnnexp import build

    datamodule = build.datamodule(config)
    datamodule.setup()
    return datamodule


def confusion_figure(confusion, classes: list[str], accuracy: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    n = len(classes)
    # Coloured by the share of each true class (row-normalised) on a log scale: at 99% accuracy the
    # diagonal is ~1 and the mistakes ~0.001-0.01, which a linear scale would leave all white.
    shares = confusion.double() / confusion.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(1.6 + 0.7 * n, 0.8 + 0.6 * n), layout="constrained")
    floor = 1e-4  # below one image in 10,000: drawn as the lightest colour
    shown = ax.imshow(shares.clamp(min=floor).numpy(), cmap="Blues", norm=LogNorm(vmin=floor, vmax=1))
    bar = fig.colorbar(shown, ax=ax, shrink=0.8, label="share of the true class (log scale)")
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.001, not 10^-3
    for (i, j), count in zip([(i, j) for i in range(n) for j in range(n)], confusion.flatten().tolist()):
        if count:
            dark = shares[i, j] > 0.1
            ax.text(j, i, count, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    title = f"accuracy {100 * accuracy:.2f}%; counts, coloured by share of the row"
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    return fig


def misclassified_figure(images, true, predicted, confidence, classes: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 5
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), layout="constrained", squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k].numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set_title(
                f"true {classes[true[k]]}\npredicted {classes[predicted[k]]} ({confidence[k]:.2f})", fontsize=8
            )
    fig.suptitle("most confidently misclassified test images" if len(images) else "no test image misclassified")
    return fig


def save_figures(figures: dict, out: Path, run_dir: Path, option: str | None) -> None:
    """PNGs in `out` (written beside and renamed), and the same figures in the run's TensorBoard."""
    import os

    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    from rnnexp.tensorboard import writer_thread_errors_said_once

    writer_thread_errors_said_once()
    writer = SummaryWriter(str(run_dir))
    suffix = "" if option is None else f"_{option}"
    try:
        for name, fig in figures.items():
            tmp = out / f".{name}.tmp.png"
            try:
                fig.savefig(tmp, dpi=110)
                os.replace(tmp, out / f"{name}.png")
            finally:
                tmp.unlink(missing_ok=True)  # what a failed write left
            writer.add_figure(f"verdict/{name}{suffix}", fig)  # closes the figure
        writer.flush()  # a failed write of the event file, kept by its writer thread, is raised here
    finally:
        writer.close()
        plt.close("all")


def main(argv: list[str] | None = None) -> int:
    """`python -m rnnexp.evaluate <argv>` (default: this process's command line); returns the exit code."""
    return run.main(evaluate, argv)


if __name__ == "__main__":
    raise SystemExit(main())
