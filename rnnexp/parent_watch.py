"""A parallel sweep's workers end with the sweep's process (hydra/launcher=parallel); the other processes of
a several-device run end with the first.

joblib's loky workers are started by the sweep's process, and on Linux and macOS nothing in loky
notices that process's end: killed (SIGKILL, the OOM killer), it left its workers finishing their
jobs, then idling (about 600 MB each) until loky's idle timeout ended them. `rnnexp.run.execute`
calls `end_with_parent` as each job starts; in a worker, a thread then watches the parent, and once
it is gone:

- the running job stops as on SIGTERM: after its current step, saved to last.ckpt, recorded
  `interrupted`, so that `resume=<sweep folder>` continues it;
- the worker exits once the job's metrics.json says how it ended (at once when it is idle), and in
  any case within `deadline_s`: SIGALRM's default action ends the process whatever it is doing;
- a job handed to the worker after that (loky queues one ahead) is not started.

Why a watching thread: joblib and loky have no setting for it (an idle timeout only, and
hydra-joblib-launcher passes no worker initializer). Linux's PR_SET_PDEATHSIG signals a child when
the *thread* that started it ends, not its process, and loky starts replacement workers from its
manager thread, so a worker could be stopped while the sweep goes on; it is Linux-only too. Comparing
os.getppid() with the parent's pid twice a second costs nothing, works on any POSIX system, and sees
the parent's end whoever adopts the orphan (pid 1 or a subreaper).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

from rnnexp.errors import OutputError
from rnnexp.record import RunRecord

log = logging.getLogger("rnnexp")

DEADLINE_S = 120  # from the parent's end to the worker's, if the job's own stop does not come
POLL_S = 0.5
EXIT = 128 + signal.SIGTERM  # what a process ended by SIGTERM reports

_job: dict[str, Path] = {}  # the run folder of the job this worker runs, or ran last


def end_with_parent(run_dir: Path, deadline_s: float = DEADLINE_S) -> None:
    """As a job starts: in a pool's worker process (joblib's), or in a rank > 0 process of a
    several-device run (started by the first, rnnexp.ddp, or by torchrun), end the job and the
    process with the process that started it. Elsewhere nothing: the basic launcher runs jobs in the
    sweep's own process, and submitit's jobs (Slurm's, or its local executor's processes) go on
    without it."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent_pid = parent.pid
    elif os.environ.get("LOCAL_RANK", "0") != "0":
        parent_pid = os.getppid()
    else:
        return
    if os.getppid() != parent_pid:
        os._exit(EXIT)  # the sweep is gone: this job is not started (resume= starts it)
    watching = bool(_job)
    _job["run_dir"] = Path(run_dir)
    if not watching:  # one thread per worker, for all the jobs it runs
        threading.Thread(target=_watch, args=(parent_pid, deadline_s), name="rnnexp-parent", daemon=True).start()


def _watch(parent_pid: int, deadline_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    # Set first: SIGALRM's default action ends the process at the deadline even where this thread cannot
    # run then (the main thread holding the GIL) or is blocked (a console write nobody reads).
    signal.alarm(max(1, round(deadline_s)))
    deadline = time.monotonic() + deadline_s
    log.warning(f"the process that started this one (pid {parent_pid}) is gone: stopping its job and this process")
    stopping = False
    while _running(_job["run_dir"]) and time.monotonic() < deadline:
        # SIGTERM only once the run (or Lightning) handles it: it then stops after the current step, saved.
        # Where it would end the process instead (the job is still loading data, or is saving after an
        # earlier signal), the job is left to reach that point (or its end).
        if not stopping and callable(signal.getsignal(signal.SIGTERM)):
            os.kill(os.getpid(), signal.SIGTERM)
            stopping = True
        time.sleep(POLL_S)
    os._exit(EXIT)


def _running(run_dir: Path) -> bool:
    try:
        return RunRecord.read(run_dir).get("status") == "running"
    except OutputError:  # unreadable: nothing to wait for
        return False
