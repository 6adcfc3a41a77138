"""The other processes of a run on several devices (Lightning's `ddp` strategy), started by the
job itself with the job's own arguments.

Lightning's own launcher starts ranks 1.. by running this program's command line again (for a
sweep, the whole sweep) and sets MASTER_ADDR, LOCAL_RANK, WORLD_SIZE... in the first process's
environment, where they stay for the next job. Instead, where a job is the first process of such a
run, it starts the others itself, before building anything:

    python -m rnnexp.train <this job's overrides> hydra.run.dir=<its run folder> ...

with the rendezvous in *their* environment only, and gives its Trainer a cluster environment (a
public Lightning plugin) saying that the processes are already there. Where something else starts
the processes (Slurm's srun, torchrun, an LSF or MPI job), Lightning's own environments are
left to it, as before.

A rank that ends with an error takes the run with it: where gloo notices the lost peer, rank 0's
error is the lost rank's (a rank killed by a signal is a resource error: the OOM killer's, most
often); where the others would wait in a collective forever (NCCL), the run is recorded `failed`
and every process killed after a grace period, as Lightning's launcher does. The other
processes end with the first (rnnexp.parent_watch).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

from rnnexp.errors import ResourceError
from rnnexp.record import RunRecord

log = logging.getLogger("rnnexp")

POLL_S = 0.5
END_WAIT_S = 120  # for the other processes to finish the job after the first did
GRACE_S = 30  # for the first process to end by itself after another ended with an error (it may meet the same)
STOPPED = {128 + s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)}


def processes(trainer: DictConfig) -> int:
    """How many processes Lightning's `ddp` runs on one machine for `trainer.devices` (as Lightning
    counts them: a list or "0,1" of GPU indices, -1 or auto for every GPU, a number)."""
    devices, accelerator = trainer.get("devices", "auto"), str(trainer.get("accelerator", "auto"))
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if not isinstance(devices, (int, str)):  # a list of device indices
        return len(devices)
    if str(devices) in ("-1", "auto"):
        import torch

        gpu = accelerator in ("gpu", "cuda") or accelerator == "auto" and torch.cuda.is_available()
        return torch.cuda.device_count() if gpu else 1
    return int(devices)


def started_elsewhere() -> bool:
    """Whether this process's rank was started by someone (this module in the first process, or what
    Lightning itself detects: torchrun, srun, an LSF or MPI job) rather than being the first of
    processes still to start."""
    from pytorch_lightning.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    detected = (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment)  # Lightning 2.6's list
    return "LOCAL_RANK" in os.environ or any(environment.detect() for environment in detected)


def starts_ranks(cfg: DictConfig) -> int:
    """The number of processes this job must start besides itself (0: none)."""
    trainer = cfg.trainer
    strategy, nodes = trainer.get("strategy"), trainer.get("num_nodes") or 1
    if not (isinstance(strategy, str) and strategy.startswith("ddp")) or nodes != 1:
        return 0
    n = processes(trainer)
    return n - 1 if n > 1 and not started_elsewhere() else 0


def _environment(port: int, world_size: int):
    from pytorch_lightning.plugins.environments import ClusterEnvironment

    class StartedRanks(ClusterEnvironment):
        """Rank 0 of processes on this machine that rnnexp started, meeting at 127.0.0.1:port."""

        @property
        def creates_processes_externally(self) -> bool:
            return True

        @property
        def main_address(self) -> str:
            return "127.0.0.1"

        @property
        def main_port(self) -> int:
            return port

        @staticmethod
        def detect() -> bool:
            return True

        def world_size(self) -> int:
            return world_size

        def set_world_size(self, size: int) -> None:
            if size != world_size:
                raise RuntimeError(f"rnnexp started {world_size} processes, Lightning counts {size}")

        def global_rank(self) -> int:
            return 0

        def set_global_rank(self, rank: int) -> None:
            pass

        def local_rank(self) -> int:
            return 0

        def node_rank(self) -> int:
            return 0

    return StartedRanks()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program() -> list[str]:
    """How this program was started, without its arguments: `python -m <module>` or `python <script>`."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    return [sys.executable, "-m", spec.name] if spec is not None else [sys.executable, os.path.abspath(sys.argv[0])]


@contextlib.contextmanager
def ranks(cfg: DictConfig, run_dir: Path, job_args: list[str]) -> Iterator[list]:
    """Around a job: where it is the first process of a `ddp` run that nothing else starts, the
    other processes, started with `job_args` in `run_dir`; yields the plugins its Trainer needs
    (none where it starts nothing). At the end, they are waited for, and killed if they linger."""
    others = starts_ranks(cfg)
    if not others:
        yield []
        return
    port, world = _free_port(), others + 1
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world), "NODE_RANK": "0"}
    command = [
        *_program(),
        *job_args,
        f'hydra.run.dir="{run_dir}"',
        "hydra.output_subdir=null",  # rank 0 writes the run's files
        "hydra/job_logging=none",  # and logs; the others' warnings and errors still show
        "hydra/hydra_logging=none",
    ]
    procs = [
        subprocess.Popen(command, env={**os.environ, **rendezvous, "LOCAL_RANK": str(rank)}) for rank in range(1, world)
    ]
    done = threading.Event()
    threading.Thread(target=_watch, args=(procs, run_dir, done), name="rnnexp-ranks", daemon=True).start()
    try:
        yield [_environment(port, world)]
    except Exception as err:  # gloo notices a lost peer (its connection reset): that loss is the failure to report
        if lost := _killed(procs):
            raise ResourceError(lost) from err
        raise
    finally:
        done.set()
        for proc in procs:
            try:
                proc.wait(timeout=END_WAIT_S)
            except subprocess.TimeoutExpired:
                log.warning(f"rank process {proc.pid} still running {END_WAIT_S} s after the first: killed")
                proc.kill()
                proc.wait()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # the next job of a sweep starts its own group
            dist.destroy_process_group()


def _killed(procs: list[subprocess.Popen], wait_s: float = 5) -> str | None:
    """What ended a rank that a signal killed (the OOM killer's SIGKILL, someone's), if one was."""
    for rank, proc in enumerate(procs, 1):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
        if proc.returncode is not None and proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            return (
                f"the process of rank {rank} was killed by {name} (the OOM killer's, or someone's); for memory, use a "
                "smaller model.hidden_size, model.layers or data.batch_size"
            )
    return None


def _watch(procs: list[subprocess.Popen], run_dir: Path, done: threading.Event) -> None:
    """A rank ending with an error while the job runs: the run is recorded failed, and every
    process of it killed (the others would wait for the lost one in their next collective)."""
    while not done.wait(POLL_S):
        failed = [(rank, p.returncode) for rank, p in enumerate(procs, 1) if p.poll() not in (None, 0, *STOPPED)]
        if failed and not done.wait(GRACE_S):
            rank, code = failed[0]
            error = (
                _killed(procs, wait_s=0)
                or f"the process of rank {rank} ended with exit code {code}; its error is above"
            )
            log.error(f"error: {error}")
            RunRecord(run_dir).update(status="failed", reason="resource" if code < 0 else "exception", error=error)
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
            os.kill(os.getpid(), signal.SIGKILL)
