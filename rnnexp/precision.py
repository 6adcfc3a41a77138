"""trainer.precision=auto: bfloat16 autocast where this model trains measurably faster in it on this
device, float32 elsewhere.

bfloat16 is not faster everywhere: on a CPU without bfloat16 instructions it is emulated and slower,
and even on one with them (AVX-512 BF16, AMX) a small model's step is too short to gain (this
module's own measurement on an AMD EPYC with AVX-512 BF16: LSTM-128 at batch 128 1.32-1.60x faster,
LSTM-32 at batch 32 about 1.1x slower). So `auto` times a few training steps of a copy of the run's model in both precisions, on
the run's device and batch size, and takes bf16-mixed only when it is at least MARGIN faster. The
accuracy it keeps is measured, not assumed: README, "Precision" (the default run, seeds 1-3 each way).

A resumed run keeps the precision its checkpoint was trained in (checkpoint["precision"]), so that
it continues exactly whatever a new measurement would say. The processes of a several-device run
must agree: the ones Lightning starts from the first (trainer=ddp) take its choice from the
environment it hands them (CHOSEN); processes started apart (several Slurm tasks) train in float32,
unless trainer.precision says otherwise, rather than each measure on its own.
"""

from __future__ import annotations

import copy
import logging
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("rnnexp")

MARGIN = 1.15  # bf16-mixed must be this much faster: it rounds, and a close call flips with noise
AUTO = "auto"
CHOSEN = "RNNEXP_AUTO_PRECISION"  # set by the first process for the device processes it starts


def bf16_supported(device: torch.device) -> bool:
    """Whether the device has bfloat16 arithmetic in hardware (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    mkldnn = torch.backends.mkldnn.is_available()
    return device.type == "cpu" and mkldnn and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool, budget: float = 0.3) -> float:
    """Seconds per training step (forward, backward, Adam) of `model` on one batch, after warm-up:
    the best of repeated timings within about `budget` seconds."""
    optimizer = torch.optim.Adam(model.parameters())
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    sync()
    best, spent = float("inf"), 0.0
    while spent < budget or best == float("inf"):
        start = time.perf_counter()
        for _ in range(3):
            step()
        sync()
        seconds = time.perf_counter() - start
        best, spent = min(best, seconds / 3), spent + seconds
    return best


def choose(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[str, str]:
    """bf16-mixed or 32-true for training `model` on batches like (x, y), on their device; and why."""
    device = x.device
    if not bf16_supported(device):
        return "32-true", f"no bfloat16 arithmetic on {device.type}"
    probe = copy.deepcopy(model).to(device).train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's RNG untouched
        fp32 = step_seconds(probe, x, y, bf16=False)
        bf16 = step_seconds(probe, x, y, bf16=True)
        fp32 = min(fp32, step_seconds(probe, x, y, bf16=False))  # both measured warm, in turn
    speedup = fp32 / bf16
    chosen = "bf16-mixed" if speedup >= MARGIN else "32-true"
    return chosen, f"a step takes {fp32 * 1e3:.2f} ms in float32, {bf16 * 1e3:.2f} ms in bf16-mixed ({speedup:.2f}x)"


def device_of(accelerator: str) -> torch.device:
    """The device trainer.accelerator names (auto: a GPU if torch sees one)."""
    if accelerator in ("gpu", "cuda") or accelerator == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def resolve(trainer_cfg, model: nn.Module, datamodule, resumed: str | None = None):
    """The Trainer's precision for trainer.precision: itself unless it is `auto`; for `auto`, what
    the run being resumed trained in (`resumed`, from its checkpoint), else measured."""
    precision = trainer_cfg.get("precision", "32-true")
    if precision != AUTO:
        return precision
    if resumed:
        log.info(f"precision: {resumed}, as the run being resumed")
        return resumed
    if int(os.environ.get("LOCAL_RANK", 0)) > 0 and os.environ.get(CHOSEN):  # started by the first process
        return os.environ[CHOSEN]
    if int(os.environ.get("SLURM_NTASKS", 1)) > 1:
        log.info(
            "precision: 32-true (trainer.precision=auto: Slurm started several processes, which would measure "
            "apart; set trainer.precision to choose)"
        )
        return "32-true"
    from rnnexp.data.datamodule import scale

    device, size = device_of(trainer_cfg.get("accelerator", "cpu")), datamodule.batch_size
    x, y = datamodule.splits["train"]
    x, y = scale(x[:size]).to(device), y[:size].to(device)
    chosen, why = choose(model, x, y)
    log.info(f"precision: {chosen} (trainer.precision=auto: {why})")
    os.environ[CHOSEN] = chosen  # read only by device processes this one starts (LOCAL_RANK > 0)
    return chosen
