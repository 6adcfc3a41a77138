"""What TensorBoard shows of a run: its settings in the HParams tab, and its Time Series cards.

HParams tab (TensorBoard 2.21, the version installed here): the table puts every setting column
before every metric column, whatever was written; the backend sorts the settings, those whose
values differ between the runs in view first, then by name; the page ticks the first five settings
and the first five metrics. So the order cannot be set from here, only helped: the settings written
are the ones that describe the model and its training (no paths, no switches), and no experiment
summary is written (the one `hp.hparams_config` writes, and Lightning's `log_hyperparams` when
given metrics), because TensorBoard takes one run's experiment summary for all runs in view: that
run's setting names only, none marked as differing, and only the metrics it names. Without it
TensorBoard lists the settings of every run, those a sweep varies first, and takes every scalar of
a run as a metric at its last value (for `val/acc_best`, the best): every scalar of the run folder
and of the folders below it. So the session (the settings) is written into a folder of its own below
the run, `hparams/`, beside the only metrics a comparison needs (COMPARED: the best and the final
validation accuracy, the final validation loss, the test accuracy) at their final values: the
HParams tab lists those four (it ticks the first five), not the training curves or the learning rate.

Time Series tab: cards are grouped by the first part of their tags, the groups sorted by name, and
the first two groups open. Lightning adds an `epoch` scalar to every write, and the test metrics
are single points: the logger below leaves `epoch` out and writes the test metrics under
`verdict/`, so that the train and validation curves are the two groups that open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger as LightningTensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from rnnexp.compat.tensorboard import file_writer
from rnnexp.record import cannot_write

log = logging.getLogger("rnnexp")


def hparams(cfg: dict, experiment: str | None = None) -> dict[str, bool | int | float | str]:
    """The settings of a resolved config that describe the model and its training, as flat keys
    (`model/cell`, `optimizer/lr`): every model setting, the data set, its view (with the permutation's
    seed for the permuted view) and batch size, the optimizer's class and its arguments, the
    schedule's class, precision, training length, gradient clipping, seed and the experiment preset.
    A setting that is null is left out (TensorBoard stores none; the cell stays empty)."""

    def name(node: dict | None) -> str:
        return node["_target_"].rsplit(".", 1)[-1] if node else "none"

    def arguments(node: dict) -> dict:
        return {k: v for k, v in node.items() if not k.startswith("_")}

    trainer = cfg["trainer"]
    model = arguments(cfg["model"])
    cell_args = model.pop("cell_args", None) or {}  # a step-wise cell's own settings, each a setting here
    settings = {
        **{f"model/{k}": v for k, v in model.items()},
        **{f"model/cell_args/{k}": v for k, v in cell_args.items()},
        "data/dataset": cfg["data"].get("dataset"),
        "data/view": cfg["data"]["view"],
        "data/permutation_seed": cfg["data"].get("permutation_seed") if cfg["data"]["view"] == "permuted" else None,
        "data/batch_size": cfg["data"]["batch_size"],
        "data/shift": cfg["data"].get("shift"),
        "optimizer/name": name(cfg["optimizer"]),
        **{f"optimizer/{k}": v for k, v in arguments(cfg["optimizer"]).items()},
        "scheduler/name": name(cfg.get("scheduler")),
        "trainer/precision": trainer.get("precision"),
        "trainer/max_epochs": trainer.get("max_epochs"),
        "trainer/max_steps": trainer.get("max_steps"),
        "grad_clip": cfg.get("grad_clip"),
        "label_smoothing": cfg.get("label_smoothing"),
        "seed": cfg.get("seed"),
        "experiment": experiment,
    }
    return {k: str(v) if isinstance(v, (list, tuple, dict)) else v for k, v in settings.items() if v is not None}


HPARAMS_RUN = "hparams"  # the folder below a run's that holds its HParams session and metrics
COMPARED = ("val/acc_best", "val/acc", "val/loss", "test/acc")  # the HParams tab's metrics, as the run names them


@rank_zero_only
def log_hparams(logger: LightningTensorBoardLogger, settings: dict, metrics: dict, step: int = 0) -> None:
    """Write a completed run's settings for the HParams tab (its session start and end, status
    success), naming no metrics in them, into `hparams/` below the run's folder, with the run's final
    `metrics` among COMPARED as scalars there (under the run's tags: `verdict/test_acc`): the
    metrics TensorBoard takes for the session. At the run's last `step`, and that writer purges
    from there: what an attempt killed after writing them left is hidden by the attempt that resumes
    it, which writes them again."""
    if not isinstance(logger, LightningTensorBoardLogger):  # e.g. Lightning's stand-in under fast_dev_run
        return
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
    from torch.utils.tensorboard import SummaryWriter

    # trial_id "": no group name, so the table names the run by its folder and never merges two
    # runs with equal settings into one row.
    start = summary_v2.hparams_pb(settings, trial_id="")
    end = Summary()
    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=info))
    end.value.add(tag=metadata.SESSION_END_INFO_TAG, metadata=content, tensor=metadata.NULL_TENSOR)
    folder = Path(logger.log_dir) / HPARAMS_RUN
    with writing(folder):
        scalars = SummaryWriter(str(folder), purge_step=step)
        try:
            writer = file_writer(scalars)
            writer.add_summary(start, global_step=step)
            for key in COMPARED:
                if metrics.get(key) is not None:
                    scalars.add_scalar(tag(key), float(metrics[key]), global_step=step)
            writer.add_summary(end, global_step=step)
        finally:
            scalars.close()


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoard logger without the `epoch` scalar Lightning adds to every write, and
    with the test metrics under `verdict/` (`verdict/test_acc`), after the train and val curves. An
    event file that cannot be written (a full disk) fails the run as its output, naming the folder.
    Its event files are read after those of the attempts before it (`after_earlier_event_files`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        writer_thread_errors_said_once()
        after_earlier_event_files(Path(self.log_dir))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        metrics = {tag(k): v for k, v in metrics.items() if k != "epoch"}
        if metrics:
            with self._writing():
                super().log_metrics(metrics, step)

    def save(self) -> None:
        with self._writing():
            super().save()

    def finalize(self, status: str) -> None:
        with self._writing():
            super().finalize(status)

    def _writing(self):
        return writing(Path(self.log_dir))


# The longest wait for a second that earlier event files name: more is a clock set differently (another node's),
# which waiting cannot mend in reasonable time.
EVENT_FILE_WAIT_S = 3.0


def after_earlier_event_files(folder: Path) -> None:
    """TensorBoard reads a folder's event files in the order of their names, which begin with the second
    each file was made in (`events.out.tfevents.<second>.<host>.<pid>...`). An attempt that resumes a run
    within the second its last attempt began would write a file read before that attempt's (by host
    and process id): the earlier attempt's curve would then come after the resumed one and be dropped
    as out of order. So this attempt's files (made after this returns, here and in `hparams/`) wait
    for the next second, where the newest earlier file's second has not passed yet (at most
    EVENT_FILE_WAIT_S)."""
    seconds = [p.name.split(".")[3] for p in folder.glob("**/events.out.tfevents.*")]
    newest = max((int(s) for s in seconds if s.isdigit()), default=None)
    wait = newest + 1 - time.time() if newest is not None else 0
    if 0 < wait <= EVENT_FILE_WAIT_S:
        time.sleep(wait)


@contextlib.contextmanager
def writing(folder: Path):
    """TensorBoard writes its event file in a thread, which hands a failed write to the next write,
    flush or close of its writer: here, where it is known which folder the file is in."""
    try:
        yield
    except OSError as err:
        raise cannot_write(f"TensorBoard's event file in {folder}", err) from err


def writer_thread_errors_said_once() -> None:
    """TensorBoard's event-writer thread, when a write fails (a full disk), keeps the error for this
    process's next write, flush or close of the event file, which then fails with it, and raises it in
    the thread too, where Python prints its traceback: a second one, on the console. That one becomes a
    warning line (the traceback is the failure's own, in train.log). Installed once per process, for
    TensorBoard's threads only (threading.excepthook)."""
    previous = threading.excepthook
    if getattr(previous, "rnnexp", False):
        return

    def hook(args) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__module__.startswith("tensorboard."):
            log.warning(f"TensorBoard stopped writing its event file: {args.exc_value}")
        else:
            previous(args)

    hook.rnnexp = True
    threading.excepthook = hook


def tag(key: str) -> str:
    """The TensorBoard tag of a logged metric: `test/acc` becomes `verdict/test_acc`, the rest stay."""
    return "verdict/" + key.replace("/", "_") if key.startswith("test/") else key


def shown(wrong, count: int) -> list[int]:
    """Which of the images scanned to show, given which of them the model gets wrong: the wrong ones,
    up to `count`, in the split's order, then, only where fewer are wrong, the first right ones."""
    ranked = sorted(range(len(wrong)), key=lambda k: not wrong[k])  # stable: the wrong first, each in order
    return ranked[:count]


class PredictionSamples(Callback):
    """Validation images the model gets wrong, each with its true class and the model's guess, as a
    figure in TensorBoard after each validation (`val/samples`, also in the Images tab): up to
    `count` of them, the first wrong ones of the validation split in its order (so the set changes as
    the model learns), filled with right ones only where fewer are wrong. The split is scanned in
    chunks until that many are found. Only the validation end is overridden: nothing runs per
    training step."""

    CHUNK = 1024  # validation images a scan classifies at once

    def __init__(self, count: int = 16):
        self.count = count

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        datamodule = trainer.datamodule
        if trainer.sanity_checking or not isinstance(trainer.logger, LightningTensorBoardLogger) or not self.count:
            return
        if not trainer.is_global_zero:  # only rank 0 writes
            return
        import torch

        from rnnexp.data.datamodule import scale

        x, y = datamodule.splits["val"]
        guesses, wrong = [], 0
        with torch.no_grad():
            for start in range(0, len(y), self.CHUNK):
                chunk = pl_module.model(scale(x[start : start + self.CHUNK]).to(pl_module.device)).argmax(-1)
                guesses.append(chunk.cpu())
                wrong += int((chunk != y[start : start + self.CHUNK].to(chunk.device)).sum())
                if wrong >= self.count:
                    break
        guesses = torch.cat(guesses)
        labels = y[: len(guesses)].cpu()
        picked = shown(guesses != labels, self.count)
        images = datamodule.images("val", len(guesses))[picked]
        classes = datamodule.classes
        fig = sample_grid(images, [(classes[int(labels[k])], classes[int(guesses[k])]) for k in picked])
        # at the step the validation metrics of this epoch are logged at (batches stepped before its last)
        trainer.logger.experiment.add_figure("val/samples", fig, global_step=trainer.global_step - 1)


def sample_grid(images, named: list[tuple[str, str]]):
    """A figure of `images` in rows of up to 8, each under its true class and the model's guess (red where
    they differ). One axes holds them all: a grid of subplots took six times as long to draw, and it is
    drawn after every validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(8, len(named))
    rows = -(-len(named) // columns)
    width, height = 34, 48  # a cell: the image (28 x 28), its margins, two lines of text above it
    inch = 1.1 / width
    top = 0.25  # inches for the figure's title
    fig = plt.figure(figsize=(columns * width * inch, rows * height * inch + top), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1 - top / (rows * height * inch + top)))
    ax.axis("off")
    for n, (truth, guess) in enumerate(named):
        row, column = divmod(n, columns)
        x, y = column * width + 3, row * height + 18
        ax.imshow(
            images[n].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest", extent=(x, x + 28, y + 28, y)
        )
        ax.text(x + 14, y - 1, f"{truth}\n-> {guess}", fontsize=7, color="black" if truth == guess else "red",
                ha="center", va="bottom")  # fmt: skip
    ax.set_xlim(0, columns * width)
    ax.set_ylim(rows * height, 0)
    ax.set_aspect("auto")
    right = sum(truth == guess for truth, guess in named)
    fig.suptitle(f"true -> guess: {len(named) - right} wrong (red), {right} right", fontsize=8)
    return fig
