"""`hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml): hydra-submitit-launcher's Slurm launcher
with the sweep watched while it runs (rnnexp/slurm.py says each job's change of state, ends a sweep
whose jobs can never start, and turns Ctrl-C and jobs ended by Slurm into one line each), and with
the jobs that completed left out when a sweep is resumed.

Written against hydra-submitit-launcher 1.2.0: `launch` below builds the executor and the array as
its BaseSubmititLauncher.launch does, and waits on Slurm's states instead of on result files.
This module stays light (Hydra imports it on every start): submitit and rnnexp load on launch.
"""

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

TARGET = "hydra_plugins.rnnexp_launchers.slurm_launcher.RnnexpSlurmLauncher"
ConfigStore.instance().store(
    group="hydra/launcher", name="rnnexp_slurm", node=SlurmQueueConf(_target_=TARGET), provider="rnnexp"
)


class RnnexpSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from rnnexp.compat.hydra import global_state
        from rnnexp.record import RunRecord
        from rnnexp.run import RunFailed
        from rnnexp.slurm import LAUNCHING, refused, watch

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        returns: dict[int, JobReturn] = {}
        todo = []  # (index, overrides, folder) of the jobs to submit
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            folder, job_cfg = self.job_folder(overrides, idx)
            record = RunRecord.read(folder)
            if record.get("status") == "completed":  # a resumed sweep: not submitted again
                returns[idx] = JobReturn(overrides=list(overrides), cfg=job_cfg, status=JobStatus.COMPLETED)
                returns[idx].return_value = record.get(str(job_cfg.get("optimized_metric")))
                continue
            todo.append((idx, list(overrides), folder))
        if len(returns):
            log.info(f"{len(returns)} of {len(job_overrides)} jobs completed before: not submitted again")
        if not todo:
            return [returns[i] for i in sorted(returns)]

        executor = self.executor()
        names = []
        for idx, overrides, folder in todo:
            names.append(folder.name)
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        args = [(o, "hydra.sweep.dir", i, f"job_id_for_{i}", global_state()) for i, o, _ in todo]
        try:
            # submitit prints a refusal before raising it; redirecting sys.stderr is process-wide: one at a time
            with LAUNCHING, contextlib.redirect_stderr(io.StringIO()):
                jobs = executor.map_array(self, *zip(*args))
        except submitit.core.utils.FailedJobError as err:  # sbatch refused the array: said once, by refused()
            raise refused(str(err), self.params) from None
        array = jobs[0].job_id.split("_")[0]
        log.info(f"Slurm job {array}: {len(jobs)} jobs (squeue -j {array})")
        states = watch([j.job_id for j in jobs], names, self.params, str(sweep_dir))
        for (idx, overrides, folder), job in zip(todo, jobs):
            state = states.get(job.job_id, "UNKNOWN")
            try:
                returns[idx] = job.results()[0]
            except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError):
                # no result: ended by scancel, by a time limit without requeue, with its node
                message = (
                    f"{folder.name} ended in Slurm as {state} without finishing (sacct -j {job.job_id}; its log: "
                    f"{job.paths.stderr}); python -m rnnexp.train resume={sweep_dir} runs it again"
                )
                if RunRecord.read(folder).get("status") in (None, "running"):  # said so itself if it could
                    RunRecord(folder).update(status="failed", reason=state.lower(), error=message)
                returns[idx] = JobReturn(overrides=overrides, status=JobStatus.FAILED)
                returns[idx].return_value = RunFailed(message)
        return [returns[i] for i in sorted(returns)]

    def job_folder(self, overrides: Sequence[str], idx: int):
        """Where job `idx` of the sweep writes, as the job itself will name it."""
        from rnnexp.slurm import LAUNCHING  # not an attribute: submitit pickles this launcher into each job

        with LAUNCHING:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir), cfg

    def executor(self):
        """submitit's executor with this launcher's settings, as BaseSubmititLauncher.launch builds it."""
        import submitit

        init = {"folder": self.params["submitit_folder"], "slurm_max_num_timeout": self.params["max_num_timeout"]}
        executor = submitit.AutoExecutor(cluster="slurm", **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"slurm_{k}": v
                for k, v in self.params.items()
                if k not in ("submitit_folder", "max_num_timeout")
            }
        )
        return executor
