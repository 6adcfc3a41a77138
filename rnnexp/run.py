"""One run's life, shared by every entry point: checks, run folder and record, status on every exit
path, seeding, signals, the failure policy and resume.

    def train(cfg):                         # a Hydra task function
        return run.execute(cfg, fit_and_test)

    def main(argv=None) -> int:             # the console entry point
        return run.main(run.hydra_app(train, "train"), argv)

`execute` runs a task `(cfg, job) -> metrics` inside the lifecycle; `hydra_app` what happens before
Hydra (a `resume=` folder, checking a whole sweep); `main` runs any entry point's app on its argv and
turns how it ended into an exit code (one console line for an expected failure). Failure policy:

- an expected failure (rnnexp.errors.ExpectedError, and the few library errors `expected()`
  recognizes: out of memory, a Trainer setting Lightning refuses) is recorded as `failed` with its
  reason, its traceback goes to the run's train.log, and the console gets one `error:` line;
- any other exception is a bug: recorded as `failed` too, and its traceback stays on the console;
- SIGINT, SIGTERM, SIGHUP (a closed terminal), SIGUSR1 and SIGUSR2 (Slurm's and submitit's warnings
  before a time limit or preemption), unless the run was started with them ignored (nohup), stop
  training after the current step, which is saved to last.ckpt; the run is `interrupted`, a sweep
  stops; a second signal stops at once; a handler that was there before
  (submitit's, which requeues the job) then gets the signal too;
- a job that Slurm or submitit runs again after a requeue continues from its last.ckpt;
- in a sweep, a failed job never stops the others (Hydra's launcher runs on and re-raises the first
  failure at the end).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.config import check, check_run, check_sweep, describe, null_group
from rnnexp.console import next_commands
from rnnexp.ddp import ranks
from rnnexp.errors import CheckpointError, ConfigError, ExpectedError, OutputError, ResourceError
from rnnexp.parent_watch import end_with_parent
from rnnexp.record import (
    CONFIG,
    DISK_FULL,
    RunRecord,
    cannot_write,
    portable,
    process_alive,
    rank_zero,
    saved_config,
    stale_files,
)

log = logging.getLogger("rnnexp")

# SIGHUP: the terminal closed; SIGUSR1 and SIGUSR2: Slurm's and submitit's warnings before a time limit
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")


class RunFailed(Exception):
    """A job of a sweep ended in an expected failure; Hydra's launcher goes on with the next job."""


class Failed(SystemExit):
    """A single run ended in an expected failure: exit 1 with one `error:` line. (A SystemExit, so
    that Hydra lets it through without adding a line of its own.)"""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


class Interrupted(KeyboardInterrupt):
    """A run stopped on a signal, its last step saved; stops a sweep as Ctrl-C does."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


@dataclass
class Job:
    """What a task gets from the lifecycle besides its config."""

    cfg: DictConfig
    dir: Path
    record: RunRecord
    resume_from: Path | None = None  # last.ckpt of the run being continued
    purge_step: int | None = None  # TensorBoard hides what an earlier attempt logged from here on
    precision: str | None = None  # what the run being continued trained in (trainer.precision=auto keeps it)
    trainer: object = None
    last_checkpoint: object = None  # the run's LastCheckpoint callback, if it has one
    stopped_by: str | None = None  # the signal that stopped training
    plugins: list = field(default_factory=list)  # for the Trainer: the cluster of processes rnnexp.ddp started
    _previous: dict = field(default_factory=dict, repr=False)  # the handlers ours replaced

    @contextlib.contextmanager
    def watch(self, trainer):
        """Around `trainer.fit`: a stop signal ends training after the current step, saved."""
        from rnnexp.checkpoint import LastCheckpoint
        from rnnexp.compat.lightning import keep_own_signal_handlers

        self.trainer = trainer
        self.last_checkpoint = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        if trainer.world_size > 1:
            # Lightning's SIGTERM handler broadcasts from inside the handler, which deadlocks DDP when the
            # other ranks are in another collective; the handlers below stop all processes at one step instead.
            keep_own_signal_handlers(trainer)
        if self.last_checkpoint is not None:
            self.last_checkpoint.config = portable(self.cfg)
        self.record.update(environment=environment(trainer, self.cfg))
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = self._previous = {name: signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS}

        def stop(signum, frame):
            name = self.stopped_by = signal.Signals(signum).name
            for other, handler in previous.items():  # a second signal stops at once
                signal.signal(getattr(signal, other), handler)
            if rank_zero():  # the other processes of a DDP run stop with it, silently
                log.warning(f"{name}: stopping after this step, once it is saved ({name} again to stop at once)")
            if self.last_checkpoint is not None:
                self.last_checkpoint.request_stop(name)
            else:  # no last.ckpt to write: stop as Lightning does, after validating
                trainer.should_stop = True

        for name, handler in previous.items():
            if handler is not signal.SIG_IGN:  # ignored by whoever started the run (nohup: SIGHUP; a background job
                signal.signal(getattr(signal, name), stop)  # of a script: SIGINT): it stays ignored
        try:
            yield
        finally:
            for name, handler in previous.items():
                signal.signal(getattr(signal, name), handler)

    def pass_on_signal(self) -> None:
        """Once the stopped run is saved and recorded: the handler that our `watch` replaced for the
        signal gets it too. In a job submitit runs, that is submitit's: it checkpoints the job and
        requeues it (and exits), so the job runs again and continues from last.ckpt."""
        handler = self._previous.get(self.stopped_by)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(getattr(signal, self.stopped_by), None)


Task = Callable[[DictConfig, Job], dict]


def execute(cfg: DictConfig, task: Task) -> float | None:
    """Run `task` for one job with its record, status, seeding, signals and failure policy; return
    the metric the sweeper optimizes (None when the run did not produce it)."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    launcher = HydraConfig.get().runtime.choices.get("hydra/launcher") if multirun else None
    try:
        # a sweep was checked whole before it started; a single run is here
        check(cfg, multirun=multirun, launcher=launcher)
        end_with_parent(Path(cfg.paths.run_dir))  # in a joblib worker: the job and the worker end with the sweep
        job = open_job(cfg)
    except ExpectedError as err:
        raise (RunFailed(str(err)) if multirun else Failed(str(err))) from None
    if job is None:  # resuming a run that is complete
        return RunRecord.read(cfg.paths.run_dir).get(cfg.optimized_metric)
    given, (cfg, run_dir, record) = cfg, (job.cfg, job.dir, job.record)
    try:
        import pytorch_lightning as pl  # only once the config is known to be sound

        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # every job of a sweep from its own seed
        check_device(cfg)
        use_threads(cfg)
        continuing = bool(given.get("resume")) or job.resume_from is not None
        with ranks(cfg, run_dir, rank_arguments(cfg, run_dir, continuing)) as job.plugins:
            results = task(cfg, job)
    except (KeyboardInterrupt, SystemExit) + _stop_exceptions() as err:
        steps = getattr(job.trainer, "global_step", None)
        name = stop_signal(err)
        record.update(status="interrupted", signal=name, steps=steps)
        message = f"interrupted at step {steps} ({name}); {next_step(name, run_dir)}"
        if scheduler_job() is not None:  # said now: the handler passed the signal below (submitit's) may end the job
            log.warning(message)
        job.pass_on_signal()
        raise Interrupted(message, getattr(signal, name)) from None
    except Exception as err:
        known = expected(err)
        record.update(
            status="failed",
            reason=known.reason if known else "exception",
            error=str(known) if known else f"{type(err).__name__}: {err}",
            steps=getattr(job.trainer, "global_step", None),
        )
        to_log_file(f"run failed: {known or err}", err)
        if known is None:
            raise  # a bug: its traceback belongs on the console (main() tells it by `inside_a_run`)
        if multirun:
            log.error(f"error: {known} (traceback in {run_dir / 'train.log'})")
            raise RunFailed(f"{run_dir.name}: {known}") from err
        raise Failed(str(known)) from None
    record.update(**{"status": "completed", **results})  # or the task's own ending: `pruned` by a search
    log.info(f"{summary(results)}; run folder {run_dir}")
    if not multirun:  # a sweep's jobs are compared together (rnnexp.report), not one by one
        log.info("next: " + "\n      ".join(next_commands(run_dir)))
    return results.get(cfg.optimized_metric)


def next_step(signal_name: str, run_dir: Path) -> str:
    """What continues an interrupted run: the scheduler, for a job submitit requeues on its warning
    signal (a time limit, a preemption) or one Slurm may requeue itself; else the user, by resume=."""
    by_hand = f"python -m rnnexp.train resume={run_dir}"
    if scheduler_job() is None:
        return f"continue with: {by_hand}"
    if signal_name in ("SIGUSR1", "SIGUSR2"):
        return "submitit requeues the job, which continues from last.ckpt by itself"
    return f"if Slurm requeues the job (a preemption, scontrol requeue) it continues by itself; if not: {by_hand}"


def rank_arguments(cfg: DictConfig, run_dir: Path, continuing: bool) -> list[str]:
    """The command line the other processes of a several-device job run (rnnexp.ddp starts them): the
    job's own overrides, or resume= of its folder where it continues a run (every rank loads the
    checkpoint); never the whole sweep's."""
    if continuing:
        return [f'resume="{run_dir}"']  # quoted: a sweep job's folder name holds `=`
    task = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    return [o for o in task if not o.startswith("resume=")]


def check_device(cfg: DictConfig) -> None:
    """An accelerator asked for that this machine lacks (a GPU where torch sees none, a TPU without
    torch_xla, ...): said before anything is built."""
    import torch
    from pytorch_lightning.accelerators import AcceleratorRegistry

    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        if str(cfg.trainer.get("strategy")) == "ddp":  # trainer=ddp
            raise ConfigError(
                f"trainer.accelerator={accelerator} (trainer=ddp): torch sees no GPU here; add "
                "trainer.accelerator=cpu to run the processes on CPU"
            )
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu): torch sees no GPU here; use trainer=cpu, or "
            "trainer=auto to use a GPU wherever there is one"
        )
    known = AcceleratorRegistry.available_accelerators()
    if accelerator not in (*known, "auto", "gpu"):
        raise ConfigError(
            f"trainer.accelerator={accelerator}: not an accelerator Lightning knows; choose one of auto, gpu, "
            f"{', '.join(sorted(known))}"
        )
    if accelerator in known and not AcceleratorRegistry[accelerator]["accelerator"].is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: torch finds no {accelerator} on this machine; use trainer=cpu, or "
            "trainer=auto to use whatever accelerator a machine has"
        )


def use_threads(cfg: DictConfig) -> int:
    """Set torch's CPU threads for this job: `threads`, else the cores divided among the jobs that run
    at once (more threads than cores makes every job crawl: two 2-thread jobs on 2 cores run about
    ten times slower than one), else torch's own default. Set for every job, as a process (the basic
    launcher's, a joblib worker) runs several. More threads than the cores this process may use are
    refused here, in the job, where the cores are known (a Slurm node has others than the login node)."""
    import torch

    default = torch_default_threads()  # before any job of this process changed it
    threads = cfg.get("threads")
    cores = available_cores()  # on the machine the job runs on: a Slurm node's, not the submitting one's
    if threads is not None and threads > cores:
        raise ConfigError(
            f"threads={threads}: more than the {cores} cores this process may use, which makes every step wait; "
            f"set threads={cores} or fewer, or threads=null"
        )
    if threads is None:
        parallel = parallel_jobs()
        threads = max(1, cores // parallel) if parallel > 1 else default
    torch.set_num_threads(threads)
    return threads


@functools.cache
def torch_default_threads() -> int:
    import torch

    return torch.get_num_threads()


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine: joblib's n_jobs (-1: one per core, as
    joblib counts), or 1 under any other launcher."""
    if not HydraConfig.initialized() or "joblib" not in str(HydraConfig.get().launcher.get("_target_", "")):
        return 1
    n_jobs = HydraConfig.get().launcher.get("n_jobs") or 1
    return max(1, available_cores() + 1 + n_jobs if n_jobs < 0 else n_jobs)


def open_job(cfg: DictConfig) -> Job | None:
    """The job's folder and record, `running`; with `resume`, or when the scheduler requeued this job,
    the checkpoint to continue from (None when the run is already complete). A folder that holds
    another run is refused."""
    run_dir = Path(cfg.paths.run_dir)
    resume_from, purge_step, precision = None, None, None
    experiment = HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None
    continuing = bool(cfg.get("resume"))
    if continuing:
        cfg, previous = continued(cfg, run_dir)
    elif rank_zero() and (previous := RunRecord.read(run_dir)).get("status"):  # DDP's other ranks share it
        if not requeued(previous):
            raise OutputError(
                f"{run_dir} already holds a run ({previous['status']}); continue it with resume={run_dir}, or give "
                "the new run a folder of its own"
            )
        log.info(f"job {scheduler_job()} requeued: continuing {run_dir}")
        continuing = True
    if continuing:
        if previous.get("status") == "completed":
            log.info(f"{run_dir} is complete ({summary(previous)}); nothing to resume")
            return None
        try:
            resume_from, purge_step, precision = resume_point(run_dir, cfg)
        except CheckpointError as err:  # the run cannot go on until its folder is mended: its record says so
            RunRecord(run_dir).update(status="failed", reason=err.reason, error=str(err))
            raise
        experiment = previous.get("experiment", experiment)
    record = RunRecord(run_dir)
    job = scheduler_job()
    record.start(
        experiment=experiment,
        resumed_from=record.relative(resume_from),
        **({"scheduler_job": job} if job else {}),
    )
    record.save_config(cfg)
    return Job(cfg, run_dir, record, resume_from, purge_step, precision)


def scheduler_job() -> str | None:
    """The id of the submitit job this process runs (a Slurm job, or submitit's local executor's),
    which stays the same when the job is requeued; None outside one."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    return str(submitit.JobEnvironment().job_id)


def requeued(previous: dict) -> bool:
    """Whether the run recorded in a folder is this very scheduler job, started again after a time limit
    or a preemption (or, with several devices, this job's rank 0): then it continues, where a new run
    would be refused the folder."""
    return previous.get("scheduler_job") is not None and previous.get("scheduler_job") == scheduler_job()


def _stop_exceptions() -> tuple[type[BaseException], ...]:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from rnnexp.checkpoint import Stopped

    return (Stopped, SIGTERMException)


def stop_signal(err: BaseException) -> str:
    """The signal that stopped a run, by the exception that ended it: ours (Stopped, after a saved
    step) names it; Lightning's SIGTERMException is SIGTERM; KeyboardInterrupt or SystemExit, SIGINT."""
    stopped, sigterm = _stop_exceptions()
    return err.signal_name if isinstance(err, stopped) else "SIGTERM" if isinstance(err, sigterm) else "SIGINT"


def expected(err: BaseException) -> ExpectedError | None:
    """The user-fixable failure behind `err` (itself, or what it was raised from), or None for a bug."""
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from rnnexp.compat.lightning import raised_by_lightning

    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for err in chain:
        if isinstance(err, ExpectedError):
            return err
    for err in reversed(chain):  # innermost first: torch's allocation error, not Hydra's wrapper of it
        if isinstance(err, OSError) and err.errno in DISK_FULL:  # whichever writer of the run met it first
            return cannot_write(err.filename or "to the run folder", err)
        if out_of_memory(err):
            return ResourceError(
                f"out of memory ({_first_line(err)[:200]}); "
                "use a smaller model.hidden_size, model.layers or data.batch_size"
            )
        if isinstance(err, MisconfigurationException) or (isinstance(err, ValueError) and raised_by_lightning(err)):
            return ConfigError(_first_line(err))  # a Trainer or callback setting Lightning refuses
    return None


def out_of_memory(err: BaseException) -> bool:
    """Python's MemoryError, torch's OutOfMemoryError (a device's allocator); torch's CPU allocator
    raises a plain RuntimeError, told only by its text ("DefaultCPUAllocator: can't allocate memory")."""
    import torch

    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and ("can't allocate memory" in str(err) or "out of memory" in str(err))


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def to_log_file(message: str, err: BaseException) -> None:
    """A traceback for whoever debugs, in the run's train.log and not on the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, (type(err), err, err.__traceback__))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def summary(metrics: dict) -> str:
    keys = ("val/acc_best", "test/acc", "test/loss")
    text = ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), float))
    if "train_time_s" in metrics:
        text += f", train time {metrics['train_time_s']:.1f} s"
    return text or "no metrics"


def environment(trainer, cfg: DictConfig) -> dict:
    """What makes a run reproducible besides its config."""
    import torch

    device = trainer.strategy.root_device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "torch": torch.__version__,
        "device": f"{device.type}: {name}",
        "threads": torch.get_num_threads(),
        "precision": str(trainer.precision),
        "git": git_commit(),
        "python": platform.python_version(),
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The project's commit, with `+dirty` when tracked files differ from it; None outside git."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except OSError:
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if commit.returncode == 0 else None


# --- resume ------------------------------------------------------------------------------------


def continued(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, dict]:
    """The config a run was started with (its config.yaml) and its record so far; a job of a
    resumed sweep that never started has neither and starts from `cfg`."""
    previous = RunRecord.read(run_dir)
    if previous.get("status") == "running" and rank_zero() and process_alive(previous, run_dir):  # not rank 0's own
        raise OutputError(
            f"resume={run_dir}: the run is still running (pid {previous['pid']} on {previous['host']}); stop it first"
        )
    if not (run_dir / CONFIG).is_file():
        return cfg, previous
    saved = saved_config(run_dir)  # where the folder is now, wherever it was made
    check(saved)
    return saved, previous


def resume_point(run_dir: Path, cfg: DictConfig) -> tuple[Path | None, int, str | None]:
    """last.ckpt of the run, if any; the TensorBoard step from which what an earlier attempt logged
    is hidden (it is logged again, identically, from the checkpoint on); the precision it trained in.
    A last.ckpt of another model than the run's config describes is refused."""
    from rnnexp.checkpoint import LAST, load, other_shape
    from rnnexp.compat.lightning import steps_logged_at

    for stale in stale_files(run_dir / "checkpoints") if rank_zero() else []:  # half-written by a killed attempt
        stale.unlink(missing_ok=True)
    path = run_dir / "checkpoints" / LAST
    if not path.exists():
        return None, 0, None  # killed before its first checkpoint: start afresh, in the same folder
    checkpoint = load(path)
    try:
        stepped = steps_logged_at(checkpoint)
    except KeyError as err:
        raise CheckpointError(f"{path}: holds no training progress; it cannot continue a run") from err
    if differ := other_shape(checkpoint, OmegaConf.to_container(cfg, resolve=True)):
        raise CheckpointError(
            f"resume={run_dir}: {path.name} holds another model than the run's {CONFIG} ({'; '.join(differ)}); "
            f"restore the run's own {CONFIG} and {path.name}, or start a new run"
        )
    return path, stepped + 1, checkpoint.get("precision")


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=<folder>` becomes the command line that continues it: a run folder's own (its saved
    config is loaded by the job), or a sweep folder's original overrides with its folder as the
    sweep folder, so that every job finds its own folder again."""
    given = [a for a in argv if a.startswith("resume=")]
    if not given:
        return argv
    folder = Path(given[-1].split("=", 1)[1].strip("'\"")).expanduser().absolute()  # quoted: a sweep job's folder
    others = [a for a in argv if not a.startswith(("resume=", "-m", "--multirun", "hydra.", "hydra/"))]
    if others:
        raise ConfigError(
            f"resume={folder}: takes no other overrides ({' '.join(others)}); a run continues with the "
            "config it was started with"
        )
    hydra_args = [a for a in argv if a.startswith(("hydra.", "hydra/"))]
    if (folder / "multirun.yaml").is_file():
        saved = OmegaConf.load(folder / "multirun.yaml").hydra.overrides
        drop = ("hydra.mode=", "hydra.sweep.dir=", "hydra.run.dir=")
        kept_hydra = [o for o in saved.hydra if not o.startswith(drop)]
        task = [o for o in saved.task if not o.startswith("resume=")]
        return ["-m", *kept_hydra, *hydra_args, f"hydra.sweep.dir={folder}", *task, f"resume={folder}"]
    if (folder / CONFIG).is_file():
        # quoted: a sweep job's folder name holds `=` (0_model=rnn), which Hydra's override grammar refuses bare
        return [*hydra_args, f'hydra.run.dir="{folder}"', "hydra.output_subdir=null", f'resume="{folder}"']
    what = "no such folder" if not folder.exists() else "neither a run (no config.yaml) nor a sweep (no multirun.yaml)"
    raise ConfigError(f"resume={folder}: {what}; give a folder under outputs/runs/ or outputs/multirun/")


# --- the console entry point ---------------------------------------------------------------------


def hydra_app(task: Callable[[DictConfig], object], config_name: str) -> Callable[[list[str]], object]:
    """The console app of a Hydra task function (`python -m rnnexp.train <argv>`): `resume=` read and
    the whole sweep checked before Hydra starts, then Hydra given `argv` (sys.argv is left alone)."""
    from rnnexp.compat.hydra import run_hydra
    from rnnexp.config import CONF

    def app(argv: list[str]) -> None:
        argv = resume_argv(argv)
        if not {"--cfg", "-c", "--help", "-h", "--info"} & set(argv):
            (check_sweep if {"-m", "--multirun"} & set(argv) else check_run)(argv)
        run_hydra(task, CONF, config_name, argv)

    return app


def main(app: Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """Run an entry point's app on its command line (default: this process's) and return the exit
    code: 0, 1 with one `error:` line for an expected failure, 128 + the signal for a stopped run. A
    bug keeps its traceback (raised). A sweep's summary follows, however it ended."""
    from rnnexp.sweep_summary import write_pending

    try:
        return _main(app, list(sys.argv[1:] if argv is None else argv))
    finally:
        write_pending()


def _main(app: Callable[[list[str]], object], argv: list[str]) -> int:
    # Hydra reads this to let errors through rather than print them itself: set as the process starts, before
    # any job (and inherited by the processes it starts), so that they can be said in one line
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        app(argv)
    except SystemExit as err:  # ours (Failed: its `error:` line), Hydra's (--help), an app's own exit code
        if isinstance(err.code, str):
            return _said(err.code, 1)
        return err.code or 0
    except RunFailed as err:
        return _said(f"error: {err}", 1)
    except Interrupted as err:
        return _said(str(err) if rank_zero() else "", 128 + int(err.signum))
    except ExpectedError as err:
        return _said(f"error: {err}", 1)
    except (HydraException, OmegaConfBaseException) as err:
        if inside_a_run(err):  # a bug inside a run, wrapped by Hydra's instantiate
            raise
        known = expected(err)  # ours, raised where Hydra builds a plugin (the sweeper opening its study)
        return _said(f"error: {known or describe(err, argv)}", 1)
    except ValueError as err:  # Hydra refuses `group=null` with a plain ValueError
        if (line := null_group(err, argv)) is None:
            raise
        return _said(f"error: {line}", 1)
    except OSError as err:  # Hydra makes the run folder, its .hydra/ and train.log before our code runs
        if err.filename is None and err.errno not in DISK_FULL or inside_a_run(err):
            raise
        return _said(f"error: {cannot_write(err.filename or 'to the run folder', err)}", 1)
    return 0


def inside_a_run(err: BaseException) -> bool:
    """Whether `err` (or what it was raised from) came out of a run's task, where `execute` recorded it
    as a bug, rather than out of Hydra before or around the job."""
    seen = []
    while err is not None and err not in seen:
        seen.append(err)
        tb = err.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code is execute.__code__:
                return True
            tb = tb.tb_next
        err = err.__cause__ or err.__context__
    return False


def _said(line: str, code: int) -> int:
    if line:
        print(line, file=sys.stderr)
    return code
