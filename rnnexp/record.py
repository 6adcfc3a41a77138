"""What a run leaves in its folder for people and tools: config.yaml and metrics.json.

metrics.json always says the run's status (running, completed, failed with its reason,
interrupted) so that a report can tell a failed or unfinished run from a finished one. Files are
replaced atomically: a reader never sees half a file, whenever the run is killed. Only the
process of global rank 0 writes (with several devices every process runs the same code).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rnnexp.errors import OutputError

METRICS = "metrics.json"
CONFIG = "config.yaml"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or this user's quota on it
OUTPUT_SETTING = "RNNEXP_OUTPUT_DIR (or hydra.run.dir)"  # what moves a run's output elsewhere


def cannot_write(what: str | os.PathLike, err: OSError, elsewhere: str | None = OUTPUT_SETTING) -> OutputError:
    """The one line for a file or folder that could not be written (`what`), with its fix."""
    return OutputError(f"cannot write {what}: {err.strerror or err}; {fix(err, elsewhere)}")


def fix(err: OSError, elsewhere: str | None = OUTPUT_SETTING) -> str:
    """What to do about a write that failed: on a full disk, free space (or write `elsewhere`, the
    setting that moves the output); otherwise choose a writable folder."""
    if err.errno in DISK_FULL:
        return "free space on that disk" + (f", or point {elsewhere} at another" if elsewhere else "")
    return f"point {elsewhere} at a writable folder" if elsewhere else "make it writable"


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` by writing a file beside it and renaming that: a reader never sees
    half of it. On a full disk, where the new copy finds no room, an existing file is overwritten in
    the blocks it already has (so that a failed run can still say why in its metrics.json)."""
    data = text.encode()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno not in DISK_FULL or not _overwrite(path, data):
            raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _overwrite(path: Path, data: bytes) -> bool:
    """Write `data` over `path` in place if the blocks the file holds take it (no new block is
    needed, so a full disk cannot fail it halfway); whether it was written."""
    try:
        with open(path, "r+b") as f:
            if len(data) > os.fstat(f.fileno()).st_blocks * 512:
                return False
            f.write(data)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        return False
    return True


class RunLog(logging.FileHandler):
    """train.log, the run folder's copy of the console (Hydra's job log: conf/train.yaml names this
    class). A line that cannot be written (a full disk) is said once, in a line among the console's
    log lines (stdout: stderr's last line stays the run's `error:`), not with logging's traceback on
    stderr for every line logged after it; the lines wait in the buffer for room."""

    told = False

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):
            return super().handleError(record)
        if not self.told:
            self.told = True
            print(f"warning: cannot write {self.baseFilename}: {err.strerror}; {fix(err)}", file=sys.stdout)


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
                raise OutputError(f"cannot create the run folder {self.dir}: {err.strerror}; {fix(err)}") from err

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
        """The composed config with every interpolation resolved: what this run really used. If it
        cannot be written (a full disk), the record says so before the run ends."""
        try:
            self._write(CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        except OutputError as err:
            with contextlib.suppress(OutputError):
                self.update(status="failed", reason=err.reason, error=str(err))
            raise

    def update(self, **fields) -> None:
        self.data.update(fields)
        self._write(METRICS, json.dumps(self.data, indent=2) + "\n")

    def _write(self, name: str, text: str) -> None:
        if not self.writes:
            return
        try:
            write_atomic(self.dir / name, text)
        except OSError as err:
            raise cannot_write(self.dir / name, err) from err


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
