"""Checkpoints: what they hold beyond Lightning's own state, when last.ckpt is written, and how
checkpoints are written (atomically) and read (weights only, with one-line errors).

A checkpoint carries everything a resume needs (as nanoGPT's do): weights, optimizer and schedule
(Lightning), loop progress and the position inside the epoch (Lightning, with the batches'
state_dict), the module's best-so-far metric and running sums (ClassifierModule), and from here the
run's resolved config and the RNG states.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.plugins import TorchCheckpointIO

from rnnexp.compat.lightning import is_last_batch
from rnnexp.errors import CheckpointError
from rnnexp.record import atomic_file, cannot_write

LAST = "last.ckpt"


class Stopped(Exception):
    """Training stopped on a signal after its last step was saved to last.ckpt."""

    def __init__(self, signal_name: str, step: int, path: Path):
        super().__init__(f"stopped by {signal_name} at step {step}; its state is in {path}")
        self.signal_name, self.step, self.path = signal_name, step, path


class LastCheckpoint(Checkpoint):
    """checkpoints/last.ckpt: one consistent snapshot of the run, what `resume=` continues from.

    Written at three moments, each after everything that moment changes (this is the one place
    that orders them):
    - after a training step of the module (its steps_per_call optimizer steps, the data position
      advanced, the train metrics of those steps logged): every `every_n_steps` optimizer steps
      and every `every_seconds` of training (whichever comes first; null turns one off);
    - after each validation: its metrics, the module's best-so-far, and then the best checkpoint
      (BestCheckpoint saves when this callback asks it to, just before last.ckpt), so that
      last.ckpt names the best file of the same validation;
    - when a stop is requested (`request_stop`, from a signal handler): the run stops after the
      current step, which is saved (at an epoch's last step, after the epoch's validation; after
      the run's last, at the end of training, before its test), and raises Stopped.
    A killed run loses at most the work since the last of these; tests/test_kill_anywhere.py kills
    runs at every point between them.

    Besides Lightning's state (weights, optimizer, schedule, loop progress, the data position,
    every callback's state) and the module's, the snapshot holds the run's resolved config (its
    paths relative to the run folder), the precision, the RNG states, and the run's own counters:
    the metrics so far and the training time so far, so that a resumed attempt that has nothing
    left to train still records what the run measured.
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = None, every_seconds: float | None = 60.0):
        self.dirpath, self.every_n_steps, self.every_seconds = Path(dirpath), every_n_steps, every_seconds
        self.config: dict | None = None  # the run's resolved config, set by the run lifecycle
        self.stop_signal: str | None = None
        self._saved_at, self._saved_step = time.monotonic(), 0
        self.metrics: dict[str, float] = {}  # of earlier attempts, up to the checkpoint this one resumed from
        self._time_before, self._started, self._ended = 0.0, None, None

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def request_stop(self, signal_name: str) -> None:
        self.stop_signal = signal_name

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved_at, self._saved_step = time.monotonic(), trainer.global_step
        self._started, self._ended = time.perf_counter(), None

    def on_train_end(self, trainer, pl_module) -> None:
        self._ended = time.perf_counter()
        if self.stop_signal is not None:  # asked for after the last save point: the run stops before its test
            if self._saved_step != trainer.global_step:
                self.save(trainer)
            raise Stopped(self.stop_signal, trainer.global_step, self.path)

    @property
    def train_time_s(self) -> float:
        """Seconds of training in this run: its earlier attempts' up to the checkpoint this one
        continued from (their time after it is trained again), and this attempt's."""
        if self._started is None:
            return self._time_before
        return self._time_before + (self._ended or time.perf_counter()) - self._started

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.stop_signal is not None
        time_due = self.every_seconds is not None and time.monotonic() - self._saved_at >= self.every_seconds
        if trainer.world_size > 1:  # saving is collective: all processes decide together, on every step
            stop, time_due = self._any(trainer, stop, time_due)
        # A step after which the run validates (an epoch's last, or the run's last at max_steps) is saved after that
        # validation (on_validation_end) instead, and a stop asked for then waits for it: saved before it, a resumed
        # run would go on past it, and that validation would never run.
        if is_last_batch(trainer) or 0 < trainer.max_steps <= trainer.global_step:
            return
        if stop:
            self.save(trainer)
            raise Stopped(self.stop_signal or "SIGTERM", trainer.global_step, self.path)
        # A training step of the module takes steps_per_call optimizer steps: due at the first one to reach or
        # pass a multiple of every_n_steps (on it, when steps_per_call divides every_n_steps and the epoch)
        n = self.every_n_steps
        step_due = n and trainer.global_step // n > self._saved_step // n
        if step_due or time_due:
            self.save(trainer)

    @staticmethod
    def _any(trainer, *flags: bool) -> list[bool]:
        """Each flag, true if it is on any process (a signal may reach one; clocks differ)."""
        import torch.distributed as dist

        tensor = torch.tensor([int(f) for f in flags], device=trainer.strategy.root_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(v) for v in tensor.tolist()]

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, BestCheckpoint):
                callback.save_best(trainer, pl_module)
        self.save(trainer)
        stop = self.stop_signal is not None
        if trainer.world_size > 1:
            [stop] = self._any(trainer, stop)
        if stop:  # requested during the epoch's last training step: now its validation is saved too
            raise Stopped(self.stop_signal or "SIGTERM", trainer.global_step, self.path)

    def save(self, trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # all of it, for resume
        self._saved_at, self._saved_step = time.monotonic(), trainer.global_step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["config"] = self.config
        checkpoint["precision"] = str(trainer.precision)  # what trainer.precision=auto chose: a resume keeps it
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        checkpoint["run"] = {"metrics": {**self.metrics, **metrics}, "train_time_s": self.train_time_s}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        run = checkpoint.get("run") or {}
        self.metrics, self._time_before = run.get("metrics", {}), run.get("train_time_s", 0.0)
        rng = checkpoint.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (conf/callbacks/default.yaml: the best epoch by validation
    accuracy), with two changes:

    - beside a LastCheckpoint it saves when that asks it to, at each validation's end just before
      last.ckpt is written, so that last.ckpt holds this callback's state for the same validation
      whatever order the callbacks run in (alone, it saves at validation end as Lightning's does);
    - the files its saved state names are taken relative to the folder they were saved in: a run
      folder copied or moved elsewhere continues with its own best checkpoint, and never deletes
      or tests the original's (Lightning's own keeps only `best_model_path` when the folder differs,
      and that still names the original's file).
    """

    def __init__(self, *args, save_on_train_epoch_end: bool = False, **kwargs):
        # False: at validation end, where the metric it ranks by is new (Lightning's default with one validation
        # an epoch saves at the training epoch's end instead, after last.ckpt of that validation was written).
        super().__init__(*args, save_on_train_epoch_end=save_on_train_epoch_end, **kwargs)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not any(isinstance(c, LastCheckpoint) for c in trainer.callbacks):
            super().on_validation_end(trainer, pl_module)

    def save_best(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)

    def load_state_dict(self, state_dict: dict) -> None:
        saved_in = state_dict.get("dirpath")

        def here(path):
            if not path or not saved_in or not self.dirpath:
                return path
            inside = os.path.relpath(path, saved_in) if os.path.isabs(path) else path
            return path if inside.startswith("..") else os.path.join(self.dirpath, inside)

        rebased = {k: here(state_dict.get(k)) for k in ("best_model_path", "kth_best_model_path", "last_model_path")}
        best_k = {here(path): score for path, score in (state_dict.get("best_k_models") or {}).items()}
        super().load_state_dict({**state_dict, **rebased, "best_k_models": best_k, "dirpath": self.dirpath})


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it, then renames it into place, so a killed
    run never leaves half a checkpoint. (Lightning's own writer stages the file in the system's
    temporary folder and moves it, which is a copy, not a rename, when that is another file
    system.) Reads with torch.load(weights_only=True) and says in one line what is wrong."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path, "wb", sync=True) as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as err:  # a folder that cannot be made, a full disk
            # torch's writer reports a failed write as RuntimeError("... unexpected pos ..."), raised from the OSError
            cause = next((e for e in (err, err.__cause__, err.__context__) if isinstance(e, OSError)), None)
            if cause is None:
                raise
            raise cannot_write(f"the checkpoint {path}", cause) from err

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = True) -> dict:
        return load(path, map_location=map_location)


def load(path: str | os.PathLike, map_location=None) -> dict:
    """A checkpoint's contents, loaded with weights_only=True; CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "no such file"
        raise CheckpointError(f"{path}: {what}")
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as err:  # untrusted bytes: whatever the unpickler trips on (KeyError for a text file, ...)
        first = type(err).__name__ + (": " + str(err).strip().splitlines()[0] if str(err).strip() else "")
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:200]})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (it holds no state_dict)")
    return checkpoint


# The settings that decide the shapes of a model's weights.
SHAPE_KEYS = (
    "model.cell", "model.hidden_size", "model.layers", "model.bidirectional", "model.input_projection",
    "model.cell_args",
)  # fmt: skip


def load_weights(path: str | os.PathLike, model: torch.nn.Module, config: dict) -> None:
    """Start a new run from a checkpoint's weights (`ckpt_path=`, a .ckpt file or a run folder,
    whose best checkpoint is taken): only the model's parameters, not its optimizer, schedule or
    progress. A checkpoint of another model shape is named with the settings that differ."""
    try:
        checkpoint = load(weights_file(Path(path)))
    except CheckpointError as err:
        raise CheckpointError(
            f"ckpt_path={path}: {str(err).removeprefix(str(path) + ': ')}; give a .ckpt file or a run folder "
            "(to continue a stopped run in its own folder: resume=<run folder>)"
        ) from err
    weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    differ = other_shape(checkpoint, config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        detail = "; ".join(differ) if differ else str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"ckpt_path={path}: a checkpoint of another model ({detail}); use the same model settings"
        ) from err


def other_shape(checkpoint: dict, config: dict) -> list[str]:
    """The settings of SHAPE_KEYS in which the model a checkpoint holds differs from the one `config`
    describes, each as `key=<theirs> there, <ours> here` (none where the checkpoint carries no config)."""
    theirs = checkpoint.get("config") or {}
    return [
        f"{key}={_select(theirs, key)} there, {_select(config, key)} here"
        for key in SHAPE_KEYS
        if theirs and _select(theirs, key) != _select(config, key)
    ]


def weights_file(path: Path) -> Path:
    """A run folder's best checkpoint (as its metrics.json names it: relative to the folder, or, in
    a record written before records were portable, in full, taken inside the folder by its name),
    else its last.ckpt."""
    if not path.is_dir():
        return path
    from rnnexp.record import RunRecord, from_run

    best = from_run(RunRecord.read(path).get("best_checkpoint"), path)
    if best is not None and best.is_absolute() and (path / "checkpoints" / best.name).is_file():
        best = path / "checkpoints" / best.name
    return best if best is not None and best.is_file() else path / "checkpoints" / LAST


def _select(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def restore(path: str | os.PathLike) -> tuple[dict, torch.nn.Module, Path]:
    """The trained model a checkpoint (or a run folder: its best checkpoint) holds, in eval mode on
    the CPU, with the resolved config it was trained with and the file it came from."""
    from rnnexp import build
    from rnnexp.record import CONFIG

    path = Path(path)
    file = weights_file(path)
    try:
        checkpoint = load(file)
    except CheckpointError as err:
        raise CheckpointError(f"ckpt_path={path}: {str(err).removeprefix(str(file) + ': ')}") from err
    config = checkpoint.get("config")
    if config is None:  # written before checkpoints carried their config: its run folder has it
        from omegaconf import OmegaConf

        from rnnexp.record import saved_config

        if not (file.parent.parent / CONFIG).is_file():
            raise CheckpointError(f"ckpt_path={path}: the checkpoint carries no config; give its run folder")
        config = OmegaConf.to_container(saved_config(file.parent.parent), resolve=True)
    if checkpoint.get("precision"):  # what the run trained and tested in (trainer.precision=auto chose it)
        config = {**config, "trainer": {**config.get("trainer", {}), "precision": checkpoint["precision"]}}
    model = build.model(config, build.datamodule(config))
    load_weights(file, model, config)
    return config, model.eval(), file


def autocast(config: dict):
    """The autocast a run's precision used (bf16-mixed: bfloat16 on the CPU), so that a restored model
    computes what the run tested; a no-op for float32, and float32 (said in a warning) on a CPU
    without bfloat16 arithmetic, where an LSTM cannot run in bfloat16."""
    import logging

    from rnnexp.precision import BF16, bf16_hardware

    bf16 = str(config.get("trainer", {}).get("precision")) in BF16
    if bf16 and not bf16_hardware("cpu"):
        logging.getLogger("rnnexp").warning(
            "the run trained in bf16-mixed; this CPU has no bfloat16 arithmetic: computing in float32, whose "
            "results may differ from the run's in the last digits"
        )
        bf16 = False
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
