"""A sweep's Slurm array as the submitter sees it (`hydra/launcher=slurm`): one line whenever a job
changes state, with the counts; a job that can never start named with the setting to change, and the
sweep ended rather than waited on; Ctrl-C of the submitter and a job ended by Slurm each in one line
that says what happened and what to run next.

The states come from Slurm itself (`squeue` while a job is queued or running, `sacct` once it left
the queue), polled every POLL_S seconds: submitit's own watcher asks `sacct` at most every 10
minutes, and takes a job for done as soon as any attempt wrote a result, so a job Slurm requeued
looked finished (with the first attempt's interruption as its result) while it ran again.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rnnexp.errors import ResourceError

log = logging.getLogger("rnnexp")

POLL_S = 5.0  # how often the submitter asks Slurm how its jobs are
# A search's workers launch from threads: composing a job's config (Hydra's config loader is not known to
# be thread-safe) and submitting it (its stderr redirected meanwhile) take turns
LAUNCHING = threading.Lock()

# Why a pending job waits (squeue's %r), where the wait can never end: what the jobs ask for exceeds
# what the partition, its nodes or the account allow. Other reasons (Resources, Priority,
# ReqNodeNotAvail while a node is down, ...) pass with time.
NEVER = {
    "PartitionConfig": "more CPUs, memory or GPUs per job than any node of the partition has",
    "PartitionNodeLimit": "more nodes than the partition allows",
    "PartitionTimeLimit": "a longer time limit than the partition allows",
    "BadConstraints": "constraints no node satisfies",
    "InvalidAccount": "an account Slurm does not know",
    "InvalidQOS": "a QOS Slurm does not know",
}
# What to change for each, in hydra.launcher's keys.
SETTINGS = {
    "PartitionConfig": "hydra.launcher.cpus_per_task, mem_gb, gpus_per_node or tasks_per_node",
    "PartitionNodeLimit": "hydra.launcher.nodes",
    "PartitionTimeLimit": "hydra.launcher.timeout_min",
    "BadConstraints": "hydra.launcher.constraint",
    "InvalidAccount": "hydra.launcher.account",
    "InvalidQOS": "hydra.launcher.qos",
}
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


@dataclass
class Sighting:
    state: str  # Slurm's: PENDING, RUNNING, REQUEUED, COMPLETED, FAILED, CANCELLED, ...
    reason: str = ""  # why a pending job waits


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""  # Slurm's controller busy or restarting: asked again at the next poll
    return done.stdout if done.returncode == 0 else ""


def sight(array_id: str) -> dict[str, Sighting]:
    """Every job of the array by its id (`<array>_<index>`, or `<array>` where submitit submitted a
    single job): queued and running ones from squeue, those that left the queue from sacct."""
    seen: dict[str, Sighting] = {}
    for line in _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", array_id]).splitlines():
        job, _, state = line.partition("|")
        if job and "[" not in job:  # not a range of array tasks that have not started
            seen[job] = Sighting(state.split()[0] if state else "UNKNOWN")  # "CANCELLED by 0"
    for line in _run(["squeue", "-h", "-r", "-j", array_id, "-o", "%i|%T|%r"]).splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        seen[job] = Sighting(state, "" if reason in ("None", "(null)") else reason)
    return seen


def capacity(partition: str | None) -> str:
    """What the partition's biggest node has, for a message: `2 CPUs, 19000 MB memory, no GPUs`."""
    lines = _run(["sinfo", "-h", "-o", "%c|%m|%G", *(["-p", partition] if partition else [])]).split()
    if not lines:
        return ""
    nodes = [line.split("|") for line in lines]
    cpus = max((int(n[0].rstrip("+")) for n in nodes if n[0].rstrip("+").isdigit()), default=0)
    memory = max((int(n[1].rstrip("+")) for n in nodes if len(n) > 1 and n[1].rstrip("+").isdigit()), default=0)
    gpus = "GPUs" if any(len(n) > 2 and "gpu" in n[2] for n in nodes) else "no GPUs"
    if not cpus:  # not sinfo's usual answer: say nothing rather than something wrong
        return ""
    memory_text = f", {memory} MB memory" if memory else ""
    return f"its nodes have at most {cpus} CPUs{memory_text}, {gpus}"


def watch(jobs: Sequence[str], names: Sequence[str], settings: dict, sweep_dir: str) -> dict[str, str]:
    """Wait for the sweep's Slurm jobs (their ids: `<array>_<index>`) to leave Slurm's queue, saying
    each change of state; the final state of each (COMPLETED, CANCELLED, ...). `names[i]` is job i's
    folder name. A job that can never start cancels the array: ResourceError."""
    array_id = jobs[0].split("_")[0]
    last: dict[str, str] = {}
    reasons: dict[str, str] = {}  # a pending job's reason may come, or change, after its state
    try:
        while True:
            seen = sight(array_id)
            changed = False
            for i, job in enumerate(jobs):
                now = seen.get(job)
                if now is None or (now.state, now.reason) == (last.get(job), reasons.get(job)):
                    continue
                changed |= now.state != last.get(job)
                last[job], reasons[job] = now.state, now.reason
                log.info(f"{names[i]}: {now.state.lower()}" + (f" ({now.reason})" if now.reason else ""))
                if now.state == "PENDING" and now.reason in NEVER:
                    _never(array_id, job, names[i], now.reason, settings)
            if changed:
                counts = Counter(s.lower() for s in last.values())
                log.info("jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
            if len(last) == len(jobs) and all(s in ENDED for s in last.values()):
                return last
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        from rnnexp.run import Interrupted

        now = {job: s.state for job, s in sight(array_id).items()} or last  # as they are at the stop
        waiting = [j for j in jobs if now.get(j, last.get(j)) not in ENDED]
        raise Interrupted(
            f"the submitter was stopped; {len(waiting)} of the sweep's {len(jobs)} jobs go on in Slurm "
            f"(squeue -j {array_id}; scancel {array_id} stops them). Once they end, see them with "
            f"python -m rnnexp.report {sweep_dir}, or complete the sweep with: "
            f"python -m rnnexp.train resume={sweep_dir}"
        ) from None


def refused(stderr: str, settings: dict) -> ResourceError:
    """sbatch's refusal of the array, in one line that names the setting."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    why = lines[-1].removeprefix("sbatch: error: ") if lines else "no reason given"
    partition, gpus = settings.get("partition"), settings.get("gpus_per_node")
    if "generic resource" in why and gpus:
        fix = (
            f"hydra.launcher.gpus_per_node={gpus} (trainer.accelerator=gpu): the partition has no GPUs; choose one "
            "that has (hydra.launcher.partition=<name>, sinfo -o '%P %G' lists them), or train on CPUs (trainer=cpu)"
        )
    elif "partition" in why.lower():
        fix = f"hydra.launcher.partition={partition}: give a partition sinfo lists, or null for the cluster's default"
    else:
        fix = f"check hydra.launcher's settings against sinfo ({_asked(settings)})"
    return ResourceError(f"sbatch refused the sweep's job array ({why}); {fix}")


def _asked(settings: dict) -> str:
    keys = ("partition", "cpus_per_task", "mem_gb", "gpus_per_node", "tasks_per_node", "timeout_min", "constraint",
            "account", "qos")  # fmt: skip
    return ", ".join(f"{k}={settings[k]}" for k in keys if settings.get(k) is not None)


def _never(array_id: str, job: str, name: str, reason: str, settings: dict) -> None:
    _run(["scancel", array_id])
    asked = _asked(settings)
    has = capacity(settings.get("partition")) if reason == "PartitionConfig" else ""
    raise ResourceError(
        f"Slurm job {job} ({name}) can never start ({reason}: {NEVER[reason]}; asked {asked}"
        + (f"; {has}" if has else "")
        + f"); the array was cancelled: change {SETTINGS[reason]} and run the sweep again"
    )
