"""Train, validate and test one configuration.

    python -m rnnexp.train model=gru model.layers=2 optimizer.lr=1e-3
    python -m rnnexp.train -m model=rnn,lstm,gru model.hidden_size=32,128
    python -m rnnexp.train resume=outputs/runs/<run>      # continue a stopped run (or sweep)

config -> checks -> DataModule + classifier + LightningModule + Trainer -> fit -> test -> metrics.
The run's life around that (folder, record, seeding, signals, failures, resume) is rnnexp.run's.
"""

from __future__ import annotations

import logging
import math
import time

from omegaconf import DictConfig, OmegaConf

from rnnexp import run
from rnnexp.console import quiet_lightning
from rnnexp.errors import ConfigError
from rnnexp.help import help_resolver
from rnnexp.names import job_folder, run_folder
from rnnexp.tensorboard import hparams, log_hparams

log = logging.getLogger("rnnexp")
OmegaConf.register_new_resolver("job_folder", job_folder, replace=True)  # folder names: rnnexp/names.py
OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)
OmegaConf.register_new_resolver("rnnexp_help", help_resolver, replace=True)  # --help's groups and keys


def train(cfg: DictConfig) -> float | None:
    """The Hydra task: one job of `python -m rnnexp.train` (a single run, or each job of a sweep)."""
    return run.execute(cfg, fit_and_test)


def fit_and_test(cfg: DictConfig, job: run.Job) -> dict:
    datamodule, module, trainer = build(cfg, job)
    log.info(f"run folder: {job.dir}")
    start = time.perf_counter()
    with job.watch(trainer):
        trainer.fit(module, datamodule=datamodule, ckpt_path=job.resume_from, weights_only=True)
    last = job.last_checkpoint  # the run's counters so far: a resumed attempt may have had nothing left to train
    results = {**(last.metrics if last else {}), **{k: float(v) for k, v in trainer.callback_metrics.items()}}
    train_time = last.train_time_s if last else time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    pruned = next((c.pruned_at for c in trainer.callbacks if getattr(c, "pruned_at", None) is not None), None)
    if pruned is not None:  # stopped by the search's pruner: not worth testing
        results.update(status="pruned", pruned_after_epoch=pruned)
    elif cfg.test:
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        results.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    steps_per_epoch = datamodule.train_dataloader().steps
    results.update(
        train_time_s=round(train_time, 2),
        steps=trainer.global_step,
        steps_per_epoch=steps_per_epoch,
        epochs=round(trainer.global_step / steps_per_epoch, 2),
        params=sum(p.numel() for p in module.model.parameters()),
        best_checkpoint=job.record.relative(best),  # relative to the run folder: it stands alone
    )
    if trainer.logger:  # HParams tab: this run's settings and the metrics a comparison needs
        experiment = job.record.data.get("experiment")
        settings = hparams(OmegaConf.to_container(cfg, resolve=True), experiment)
        precision = {"trainer/precision": str(trainer.precision)}  # what auto chose
        log_hparams(trainer.logger, {**settings, **precision}, results, step=trainer.global_step)
        trainer.logger.finalize("success")  # flush: written after test, nothing else would
    return results


def build(cfg: DictConfig, job: run.Job | None = None):
    """The DataModule, LightningModule and Trainer a config describes (also used by benchmarks/).
    The data are read first, so that a bad file is reported before anything else is built."""
    from hydra.utils import instantiate

    from rnnexp import build as parts
    from rnnexp.checkpoint import AtomicCheckpointIO, load_weights
    from rnnexp.module import ClassifierModule
    from rnnexp.precision import resolve

    # the epoch's cut is the data's: counted in batches, and where the epoch's position is kept for resume
    limit = cfg.trainer.get("limit_train_batches")
    datamodule = parts.datamodule(cfg, steps_per_call=cfg.steps_per_call, limit_train_batches=limit)
    datamodule.prepare_data()
    datamodule.setup()
    model = parts.model(cfg, datamodule)
    describe(cfg, datamodule, model)
    if cfg.get("ckpt_path") and not (job and job.resume_from):
        load_weights(cfg.ckpt_path, model, OmegaConf.to_container(cfg, resolve=True))
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = ClassifierModule(
        model, instantiate(cfg.optimizer), scheduler, cfg.grad_clip, datamodule.num_classes, cfg.label_smoothing
    )
    purge = {"purge_step": job.purge_step} if job and job.purge_step is not None else {}
    logger = instantiate(cfg.logger, **purge) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if cfg.get("trial") is not None:  # a trial of an Optuna search: reports to it, may be pruned
        from rnnexp.study import trial_report

        callbacks += [report] if (report := trial_report(cfg)) else []
    precision = resolve(cfg.trainer, model, datamodule, job.precision if job else None)
    quiet_lightning()
    trainer = instantiate(
        cfg.trainer,
        precision=precision,
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *(job.plugins if job else [])],
        limit_train_batches=None,  # cut by the datamodule
    )
    validate_by_batches(trainer, datamodule)
    return datamodule, module, trainer


def describe(cfg: DictConfig, datamodule, model) -> None:
    """The data and the model a run trains, in a line each."""
    splits = datamodule.splits
    sizes = ", ".join(f"{len(splits[k][1]):,} {k}" for k in ("train", "val", "test"))
    steps, features = splits["test"][0].shape[1:]  # sequences: (images, steps, features)
    log.info(
        f"data: {cfg.data.dataset} ({datamodule.root}): {sizes}; {cfg.data.view}, {steps} steps of {features}; "
        f"batches of {cfg.data.batch_size}"
    )
    m = cfg.model
    shape = f"{m.layers} x {m.hidden_size}" + (", bidirectional" if m.bidirectional else "")
    params = sum(p.numel() for p in model.parameters())
    log.info(f"model: {m.cell} {shape}, {params:,} parameters")


def validate_by_batches(trainer, datamodule) -> None:
    """Make trainer.val_check_interval count batches, as Lightning documents it (an int: every that many
    training batches; a float below 1: after that fraction of an epoch's batches), where each of
    Lightning's training steps takes several batches (steps_per_call; one device). The training steps
    are made as long as the largest common divisor of steps_per_call, the interval and the epoch's
    batches, so that a validation falls between two of them and every epoch is whole training steps
    (its batch count and Lightning's then agree, within the epoch and across epochs); Lightning is
    given the interval in those training steps."""
    every, per_step = trainer.val_check_interval, datamodule.steps_per_call
    if trainer.world_size > 1 or per_step == 1 or isinstance(every, bool) or not isinstance(every, (int, float)):
        return  # one batch a training step already; a time-based interval (Lightning keeps it apart) counts no batches
    batches = datamodule.train_dataloader().steps  # before fit: this process's whole epoch (one device)
    if isinstance(every, float):
        if every >= 1.0:
            return  # at the end of each epoch
        every = max(1, int(batches * every))  # Lightning's rounding, on batches
    if every > batches and trainer.check_val_every_n_epoch is not None and trainer.limit_val_batches > 0:
        raise ConfigError(
            f"trainer.val_check_interval={every}: more than the {batches} training batches of an epoch; give at "
            f"most {batches}, or add trainer.check_val_every_n_epoch=null to count batches across epochs"
        )
    datamodule.steps_per_call = math.gcd(per_step, every, batches)
    trainer.val_check_interval = every // datamodule.steps_per_call
    if datamodule.steps_per_call < per_step:
        log.info(
            f"steps_per_call={per_step} runs as {datamodule.steps_per_call}, so that validation falls between two "
            f"training steps every {every} batches (of {batches} an epoch)"
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m rnnexp.train <argv>` (default: this process's command line); returns the exit code."""
    return run.main(run.hydra_app(train, "train"), argv)


if __name__ == "__main__":
    raise SystemExit(main())
