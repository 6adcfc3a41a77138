"""Train, validate and test one configuration.

    python -m rnnexp.train model=gru model.layers=2 optimizer.lr=1e-3
    python -m rnnexp.train -m model=rnn,lstm,gru model.hidden_size=32,128

config -> checks -> DataModule + classifier + LightningModule + Trainer -> fit -> test -> metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.config import ConfigError, check, describe, swept
from rnnexp.record import RunRecord

log = logging.getLogger("rnnexp")
OmegaConf.register_new_resolver("swept", swept, replace=True)  # sweep job folder names


def build(cfg: DictConfig):
    """The DataModule, LightningModule and Trainer a config describes (also used by benchmarks/)."""
    from hydra.utils import instantiate

    from rnnexp.module import ClassifierModule

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, input_size=datamodule.input_size, num_classes=datamodule.num_classes)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = ClassifierModule(model, instantiate(cfg.optimizer), scheduler, cfg.grad_clip, datamodule.num_classes)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    return datamodule, module, trainer


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def train(cfg: DictConfig) -> float:
    try:
        check(cfg, multirun=HydraConfig.get().mode == RunMode.MULTIRUN)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None

    import pytorch_lightning as pl  # only once the config is known to be sound

    from rnnexp.tensorboard import hparams, log_hparams

    record = RunRecord(cfg.paths.run_dir)
    record.save_config(cfg)
    record.update(
        status="running",
        started=time.strftime("%Y-%m-%dT%H:%M:%S"),
        experiment=HydraConfig.get().runtime.choices.get("experiment"),
        host=socket.gethostname(),
        pid=os.getpid(),  # lets a report tell a live run from a killed one
    )
    pl.seed_everything(cfg.seed, workers=True)  # every job of a multirun starts from its own seed

    datamodule, module, trainer = build(cfg)
    try:
        start = time.perf_counter()
        with stop_on_interrupt(trainer) as interrupted:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        train_time = time.perf_counter() - start
        if interrupted:
            raise SystemExit(f"interrupted at step {trainer.global_step}; checkpoints in {record.dir}")
        results = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.test:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
            results.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C: ours after a step, or Lightning's at once
        record.update(status="interrupted", steps=trainer.global_step)
        raise
    except Exception as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise

    record.update(
        status="completed",
        **results,
        train_time_s=round(train_time, 2),
        steps=trainer.global_step,
        steps_per_epoch=trainer.num_training_batches,
        epochs=round(trainer.global_step / trainer.num_training_batches, 2),
        params=sum(p.numel() for p in module.model.parameters()),
        best_checkpoint=best,
    )
    if trainer.logger:  # HParams tab: this run's settings; TensorBoard takes its scalars as the metrics
        experiment = HydraConfig.get().runtime.choices.get("experiment")
        log_hparams(trainer.logger, hparams(OmegaConf.to_container(cfg, resolve=True), experiment))
        trainer.logger.finalize("success")  # flush: written after test, nothing else would
    summary = ", ".join(f"{k}={results[k]:.4f}" for k in ("val/acc_best", "test/acc", "test/loss") if k in results)
    log.info(f"{summary}, train time {train_time:.1f} s; run folder {record.dir}")
    return results[cfg.optimized_metric]


@contextlib.contextmanager
def stop_on_interrupt(trainer):
    """The first Ctrl-C ends training after the current step, validated and checkpointed; the
    second stops at once. (Lightning's own handling raises wherever the signal lands, which can
    be inside a writer's lock, and then ignores Ctrl-C while it shuts down.)"""
    interrupted: list[bool] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield interrupted
        return

    def stop(signum, frame):
        signal.signal(signal.SIGINT, previous)
        interrupted.append(True)
        trainer.should_stop = True
        log.warning("Ctrl-C: stopping after this step, once validated and checkpointed (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def main() -> None:
    # Let Hydra's errors reach us, and say the configuration ones in one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        train()
    except (HydraException, OmegaConfBaseException) as err:
        raise SystemExit(f"error: {describe(err)}") from None
    except FloatingPointError as err:  # a diverged run: its record and checkpoints are kept
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
