"""Checkpoints: what they hold beyond Lightning's own state, when last.ckpt is written, and how
checkpoints are written (atomically) and read (weights only, with one-line errors).

A checkpoint carries everything a resume needs (as nanoGPT's do): weights, optimizer and schedule
(Lightning), loop progress and the position inside the epoch (Lightning, with the batches'
state_dict), the module's best-so-far metric and running sums (ClassifierModule), and from here the
run's resolved config and the RNG states.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint

from rnnexp.errors import CheckpointError
from rnnexp.record import cannot_write

LAST = "last.ckpt"


class Stopped(Exception):
    """Training stopped on a signal after its last step was saved to last.ckpt."""

    def __init__(self, signal_name: str, step: int, path: Path):
        super().__init__(f"stopped by {signal_name} at step {step}; its state is in {path}")
        self.signal_name, self.step, self.path = signal_name, step, path


class LastCheckpoint(Checkpoint):
    """checkpoints/last.ckpt, rewritten after every validation, every `every_n_steps` training steps
    and every `every_seconds` of training (whichever comes first; null turns one off), and when
    a stop is requested (`request_stop`, called from a signal handler): then the run stops after
    the current step (at an epoch's end, after its validation), which is saved, and raises Stopped.
    A killed run loses at most the work since the last of these.

    A Checkpoint subclass, so Lightning runs it after the best-checkpoint callback: last.ckpt then
    holds that callback's state for the same validation.
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = None, every_seconds: float | None = 60.0):
        self.dirpath, self.every_n_steps, self.every_seconds = Path(dirpath), every_n_steps, every_seconds
        self.config: dict | None = None  # the run's resolved config, set by the run lifecycle
        self.stop_signal: str | None = None
        self._saved_at, self._saved_step = time.monotonic(), 0

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    def request_stop(self, signal_name: str) -> None:
        self.stop_signal = signal_name

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved_at, self._saved_step = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.stop_signal is not None
        time_due = self.every_seconds is not None and time.monotonic() - self._saved_at >= self.every_seconds
        if trainer.world_size > 1:  # saving is collective: all processes decide together, on every step
            stop, time_due = self._any(trainer, stop, time_due)
        # At an epoch's last training step, the stop waits for the epoch's validation (on_validation_end, or
        # the next step where there is none): stopped before it, a resumed run would begin the next epoch,
        # and that validation would never run.
        if stop and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
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

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        rng = checkpoint.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it, then renames it into place, so a killed
    run never leaves half a checkpoint. (Lightning's own writer stages the file in the system's
    temporary folder and moves it, which is a copy, not a rename, when that is another file
    system.) Reads with torch.load(weights_only=True) and says in one line what is wrong."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:  # a folder that cannot be made, a full disk
            # torch's writer reports a failed write as RuntimeError("... unexpected pos ..."), raised from the OSError
            cause = next((e for e in (err, err.__cause__, err.__context__) if isinstance(e, OSError)), None)
            if cause is None:
                raise
            raise cannot_write(f"the checkpoint {path}", cause) from err
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

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
SHAPE_KEYS = ("model.cell", "model.hidden_size", "model.layers", "model.bidirectional", "model.input_projection")


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
    theirs = checkpoint.get("config") or {}
    differ = [
        f"{key}={_select(theirs, key)} there, {_select(config, key)} here"
        for key in SHAPE_KEYS
        if theirs and _select(theirs, key) != _select(config, key)
    ]
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        detail = "; ".join(differ) if differ else str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"ckpt_path={path}: a checkpoint of another model ({detail}); use the same model settings"
        ) from err


def weights_file(path: Path) -> Path:
    """A run folder's best checkpoint (as its metrics.json names it), else its last.ckpt."""
    if not path.is_dir():
        return path
    from rnnexp.record import RunRecord

    best = RunRecord.read(path).get("best_checkpoint")
    return Path(best) if best and Path(best).is_file() else path / "checkpoints" / LAST


def _select(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def restore(path: str | os.PathLike) -> tuple[dict, torch.nn.Module, Path]:
    """The trained model a checkpoint (or a run folder: its best checkpoint) holds, in eval mode on
    the CPU, with the resolved config it was trained with and the file it came from."""
    from hydra.utils import instantiate

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

        saved = file.parent.parent / CONFIG
        if not saved.is_file():
            raise CheckpointError(f"ckpt_path={path}: the checkpoint carries no config; give its run folder")
        config = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
    if checkpoint.get("precision"):  # what the run trained and tested in (trainer.precision=auto chose it)
        config = {**config, "trainer": {**config.get("trainer", {}), "precision": checkpoint["precision"]}}
    datamodule = instantiate(config["data"], seed=config["seed"])
    model = instantiate(config["model"], input_size=datamodule.input_size, num_classes=datamodule.num_classes)
    load_weights(file, model, config)
    return config, model.eval(), file


def autocast(config: dict):
    """The autocast a run's precision used (bf16-mixed: bfloat16 on the CPU), so that a restored model
    computes what the run tested; a no-op for float32."""
    bf16 = str(config.get("trainer", {}).get("precision")) in ("bf16-mixed", "bf16")
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
