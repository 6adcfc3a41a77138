"""What a run leaves in its folder for people and tools: config.yaml and metrics.json.

metrics.json always says the run's status (running, completed, failed with its reason,
interrupted) so that a report can tell a failed or unfinished run from a finished one. Files are
replaced atomically: a reader never sees half a file, whenever the run is killed. Only the
process of global rank 0 writes (with several devices every process runs the same code). While
the run runs, its `heartbeat` file tells any host sharing the folder that it is alive
(`process_alive`).
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
import threading
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rnnexp.errors import OutputError

METRICS = "metrics.json"
CONFIG = "config.yaml"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or this user's quota on it
OUTPUT_SETTING = "RNNEXP_OUTPUT_DIR (or hydra.run.dir)"  # what moves a run's output elsewhere
HEARTBEAT = "heartbeat"  # touched by a running run, so that any host can tell it is alive
HEARTBEAT_S = 30.0  # how often; a heartbeat older than MISSED_BEATS periods is a run that is gone
MISSED_BEATS = 3


def cannot_write(what: str | os.PathLike, err: OSError, elsewhere: str | None = OUTPUT_SETTING) -> OutputError:
    """The one line for a file or folder that could not be written (`what`), with its fix."""
    return OutputError(f"cannot write {what}: {err.strerror or err}; {fix(err, elsewhere)}")


def fix(err: OSError, elsewhere: str | None = OUTPUT_SETTING) -> str:
    """What to do about a write that failed: on a full disk, free space (or write `elsewhere`, the
    setting that moves the output); otherwise choose a writable folder."""
    if err.errno in DISK_FULL:
        return "free space on that disk" + (f", or point {elsewhere} at another" if elsewhere else "")
    return f"point {elsewhere} at a writable folder" if elsewhere else "make it writable"


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w", sync: bool = False):
    """A file opened for writing beside `path` and renamed onto it once written (fsynced first with
    `sync`), so that a reader, or a run killed while writing, never sees half a file; readable by
    others (0644) as any other file of the run. Left half-written, the temporary file is removed,
    or, when the process is killed, found by `stale_files` on the next attempt."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, mode) as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


TMP = ".tmp"


def stale_files(folder: Path) -> list[Path]:
    """What `atomic_file` left in a folder when its process was killed while writing."""
    return sorted(folder.glob(f".*{TMP}")) if folder.is_dir() else []


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (atomic_file). On a full disk, where the new copy finds no room, an
    existing file is overwritten in the blocks it already has (so that a failed run can still say
    why in its metrics.json)."""
    data = text.encode()
    try:
        with atomic_file(path, "wb") as f:
            f.write(data)
    except OSError as err:
        if err.errno not in DISK_FULL or not _overwrite(path, data):
            raise


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
        self.heartbeat: Heartbeat | None = None
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
        if self.writes:
            self.heartbeat = Heartbeat(self.dir / HEARTBEAT)
            self.heartbeat.start()

    def save_config(self, cfg: DictConfig) -> None:
        """The composed config with every interpolation resolved (what this run really used), the
        paths inside the run folder kept relative to it (`portable`), and without `resume`: how a
        run was started is not part of what it is (a job first started by `resume=` of its sweep is
        the same setting as its sweep's other jobs). If it cannot be written (a full disk), the
        record says so before the run ends."""
        config = portable(cfg)
        config["resume"] = None
        try:
            self._write(CONFIG, OmegaConf.to_yaml(config))
        except OutputError as err:
            with contextlib.suppress(OutputError):
                self.update(status="failed", reason=err.reason, error=str(err))
            raise

    def relative(self, path: str | os.PathLike | None) -> str | None:
        """A path to put in the record: relative to the run folder where it is inside it."""
        return in_run(path, self.dir)

    def update(self, **fields) -> None:
        """Fields added to the record and written; a status other than `running` is the run's ending,
        whichever it is (completed, pruned, failed, interrupted): its heartbeat stops first."""
        self.data.update(fields)
        if self.heartbeat is not None and fields.get("status", "running") != "running":
            self.heartbeat.stop()
            self.heartbeat = None
        self._write(METRICS, json.dumps(self.data, indent=2) + "\n")

    def _write(self, name: str, text: str) -> None:
        if not self.writes:
            return
        try:
            write_atomic(self.dir / name, text)
        except OSError as err:
            raise cannot_write(self.dir / name, err) from err


# --- a run folder that stands alone -----------------------------------------------------------------

RUN_DIR = "${paths.run_dir}"


def portable(cfg: DictConfig | dict) -> dict:
    """A config resolved, with every path inside its run folder (paths.run_dir) written as
    `${paths.run_dir}/...` and paths.run_dir itself as `.`: nothing in it says where the folder was
    made, and `saved_config` sets paths.run_dir to wherever the folder is when it is read."""
    config = OmegaConf.to_container(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg, resolve=True)
    root = (config.get("paths") or {}).get("run_dir")
    if root in (None, "", "."):
        return config

    def rebased(node):
        if isinstance(node, dict):
            return {k: rebased(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rebased(v) for v in node]
        if isinstance(node, str) and (node == root or node.startswith(root.rstrip(os.sep) + os.sep)):
            return RUN_DIR + node[len(root.rstrip(os.sep)) :]
        return node

    config = rebased(config)
    config["paths"]["run_dir"] = "."
    return config


def saved_config(run_dir: Path, config: dict | None = None) -> DictConfig:
    """A run's config (its config.yaml, or `config` as a checkpoint carries it) with paths.run_dir
    set to `run_dir`, where the folder is now: its checkpoints, event files and log are written
    there, never where the folder was made. (A config written before configs were portable names
    its folder in full: that is rebased too.)"""
    cfg = OmegaConf.load(run_dir / CONFIG) if config is None else OmegaConf.create(config)
    if OmegaConf.select(cfg, "paths.run_dir") is None:
        return cfg
    if cfg.paths.run_dir != ".":
        cfg = OmegaConf.create(portable(cfg))
    cfg.paths.run_dir = str(run_dir)
    return cfg


def in_run(path: str | os.PathLike | None, run_dir: str | os.PathLike) -> str | None:
    """`path` relative to the run folder where it is inside it (symbolic links resolved), else as given."""
    if not path:
        return path and str(path)
    real, root = os.path.realpath(path), os.path.realpath(run_dir)
    return os.path.relpath(real, root) if real.startswith(root + os.sep) else str(path)


def from_run(path: str | None, run_dir: str | os.PathLike) -> Path | None:
    """A path a record or checkpoint holds, as a path now: relative ones are inside the run folder."""
    return None if not path else Path(run_dir) / path


# --- is a run alive -----------------------------------------------------------------------------


class Heartbeat:
    """A run's `heartbeat` file, its modification time refreshed every HEARTBEAT_S seconds by a
    daemon thread while the run runs: how a run on another host (a Slurm node sharing the file
    system) is told alive, where its pid says nothing. A killed process simply stops refreshing it;
    a run that ends stops it and removes the file. Refreshed with `os.utime` (no times given), which
    on a network file system stamps the server's time, the clock `heartbeat_fresh` compares with."""

    def __init__(self, path: Path):
        self.path = path
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        with contextlib.suppress(OSError):  # a file system that refuses it: other hosts see the run dead, it runs on
            self.path.touch()
        self.thread = threading.Thread(target=self.beat, name="rnnexp-heartbeat", daemon=True)
        self.thread.start()

    def beat(self) -> None:
        """Refresh until stopped; only refresh (never create), so that a beat racing `stop` cannot
        bring back the file it removed."""
        while not self.stopped.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.path.unlink()


def heartbeat_fresh(run_dir: str | os.PathLike) -> bool:
    """Whether the run in a folder refreshed its heartbeat within the last MISSED_BEATS periods, by
    the clock of the file system that holds it (`folder_now`), so that hosts whose clocks differ
    agree. No heartbeat file (a run recorded before heartbeats, or one that ended): not fresh."""
    try:
        beat = os.stat(Path(run_dir) / HEARTBEAT).st_mtime
    except OSError:
        return False
    return folder_now(Path(run_dir)) - beat < MISSED_BEATS * HEARTBEAT_S


def folder_now(folder: Path) -> float:
    """The time now as the file system of `folder` stamps it: the modification time of a file just
    created and touched there, as a heartbeat is (a network file system's server clock, whatever
    this host's clock says). Where the folder cannot be written, this host's clock, assumed close
    to the writer's (NTP)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".now.", suffix=TMP)  # removed at once, below
    except OSError:
        return time.time()
    try:
        os.utime(tmp)
        return os.fstat(fd).st_mtime
    except OSError:
        return time.time()
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def process_alive(metrics: dict, run_dir: str | os.PathLike | None = None) -> bool:
    """Whether the run a record (in `run_dir`) names is still running. On its own host its pid says,
    at once (a run killed there can be resumed right away); on another host, a fresh heartbeat
    (`heartbeat_fresh`) says. A record without a heartbeat (written before heartbeats, or without
    `run_dir`) on another host is taken for dead, as before."""
    if metrics.get("host") != socket.gethostname():
        return run_dir is not None and heartbeat_fresh(run_dir)
    if metrics.get("pid") in (None, os.getpid()):
        return False
    try:
        os.kill(metrics["pid"], 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):  # not ours to probe, or no usable pid
        return True  # (a hand-edited record): take its word
    return True
