"""What a run leaves in its folder for people and tools: config.yaml and metrics.json.

metrics.json always says the run's status (running, completed, failed with its reason,
interrupted) so that a report can tell a failed or unfinished run from a finished one. Files are
replaced atomically: a reader never sees half a file, whenever the run is killed. Only the
process of global rank 0 writes (with several devices every process runs the same code).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rnnexp.errors import OutputError

METRICS = "metrics.json"
CONFIG = "config.yaml"


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def rank_zero() -> bool:
    """Whether this is the process of global rank 0 (the only one, or the first of several)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


class RunRecord:
    """A run's metrics.json, continued where an earlier attempt left it."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.data: dict = self.read(self.dir)
        self.writes = rank_zero()
        if self.writes:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OutputError(
                    f"cannot create the run folder {self.dir}: {err.strerror}; point RNNEXP_OUTPUT_DIR "
                    "(or hydra.run.dir) at a writable folder"
                ) from err

    @staticmethod
    def read(run_dir: str | os.PathLike) -> dict:
        """The record so far; {} when there is none (a run that never started)."""
        path = Path(run_dir) / METRICS
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise OutputError(f"{path}: unreadable ({err}); move it away to start the record afresh") from err
        return data if isinstance(data, dict) else {}

    def start(self, **fields) -> None:
        """Status `running`, with what lets a report tell a live run from a killed one."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        attempts = self.data.get("attempts", 0) + 1
        for stale in ("error", "reason", "signal"):  # an earlier attempt's ending
            self.data.pop(stale, None)
        self.update(
            status="running",
            started=self.data.get("started", now),
            attempts=attempts,
            **({"resumed": now} if attempts > 1 else {}),
            host=socket.gethostname(),
            pid=os.getpid(),
            **fields,
        )

    def save_config(self, cfg: DictConfig) -> None:
        """The composed config with every interpolation resolved: what this run really used."""
        self._write(CONFIG, OmegaConf.to_yaml(cfg, resolve=True))

    def update(self, **fields) -> None:
        self.data.update(fields)
        self._write(METRICS, json.dumps(self.data, indent=2) + "\n")

    def _write(self, name: str, text: str) -> None:
        if not self.writes:
            return
        try:
            write_atomic(self.dir / name, text)
        except OSError as err:
            raise OutputError(
                f"cannot write {self.dir / name}: {err.strerror}; point RNNEXP_OUTPUT_DIR (or hydra.run.dir) "
                "at a writable folder"
            ) from err


def process_alive(metrics: dict) -> bool:
    """Whether the process a record names is still running (only knowable on its own host)."""
    if metrics.get("host") != socket.gethostname() or metrics.get("pid") in (None, os.getpid()):
        return False
    try:
        os.kill(metrics["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
