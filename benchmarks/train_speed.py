"""Seconds per training epoch: rnnexp's real training path against a plain PyTorch loop.

    python benchmarks/train_speed.py                       # LSTM-128, batch 128, 7 repeats
    python benchmarks/train_speed.py --cell gru --hidden 512 --batch 32 --batches 100
    python benchmarks/train_speed.py --grid                # the README's scaling table
    python benchmarks/train_speed.py --precision bf16-mixed  # both sides under bfloat16 autocast
    python benchmarks/train_speed.py --time-to 0.99        # the default run: seconds until val/acc >= 0.99
    python benchmarks/train_speed.py data.root=/path/to/mnist trainer.log_every_n_steps=10

Both sides train the same model on the same in-memory MNIST training split with the same optimizer,
schedule, gradient clipping, label smoothing and precision, without augmentation (data.shift=0; what
the default run's shifts cost is printed on its own line). The rnnexp side is what `python -m
rnnexp.train` builds (rnnexp.train.build: default callbacks, TensorBoard logger, checkpointing, progress bar); the plain
side is a bare loop over index-cut batches. They alternate, one epoch each per repeat, after one
untimed warm-up epoch each, and the median of the per-repeat ratios is reported with its spread.
An epoch is timed from its start to the end of its last training batch: validation, checkpoint
writing and Trainer construction are outside the timing on the rnnexp side and absent on the
other. This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import time

LAUNCH = time.perf_counter()  # before the heavy imports: "launch to first step" counts them

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from rnnexp.module import cross_entropies, schedule  # noqa: E402
from rnnexp.train import build  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


class EpochTimer:
    """Times each training epoch from its start to the end of its last batch.

    It wraps two hooks the LightningModule already has instead of adding a callback: Lightning
    calls every callback's hooks on every step, so a timing callback would slow the side it times.
    """

    def __init__(self):
        self.first_step_at: float | None = None
        self.seconds: list[float] = []

    def attach(self, module: pl.LightningModule) -> None:
        epoch_start, batch_end = module.on_train_epoch_start, module.on_train_batch_end

        def on_train_epoch_start():
            self._start = time.perf_counter()
            epoch_start()

        def on_train_batch_end(outputs, batch, batch_idx):
            batch_end(outputs, batch, batch_idx)
            if self.first_step_at is None:
                self.first_step_at = time.perf_counter()
            if batch_idx + 1 == module.trainer.num_training_batches:
                if module.device.type == "cuda":
                    torch.cuda.synchronize()
                self.seconds.append(time.perf_counter() - self._start)

        module.on_train_epoch_start, module.on_train_batch_end = on_train_epoch_start, on_train_batch_end


def config(args, cell: str, hidden: int, batch: int, run_dir: str):
    overrides = [
        f"model={cell}",
        f"model.hidden_size={hidden}",
        f"model.layers={args.layers}",
        f"data.batch_size={batch}",
        f"trainer.accelerator={args.device.replace('cuda', 'gpu')}",
        f"trainer.precision={args.precision}",
        "trainer.max_epochs=1",
        "data.shift=0",  # augmentation is work the plain loop does not do: its cost is printed apart (shift_cost)
        f"paths.run_dir={run_dir}",
    ]
    overrides += args.overrides
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if args.batches:  # in batches (optimizer steps): the datamodule cuts the epoch
        OmegaConf.update(cfg, "trainer.limit_train_batches", args.batches, force_add=True)
    return cfg


def rnnexp_epoch(cfg, datamodule, timer: EpochTimer) -> float:
    """One epoch through rnnexp's own objects, in a fresh run folder."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg.paths.run_dir = run_dir
        _, module, trainer = build(cfg)
        timer.attach(module)
        with contextlib.redirect_stdout(sys.stderr):  # the progress bar draws as usual, off the results
            trainer.fit(module, datamodule=datamodule)  # the datamodule is reused: data are prepared once
    return timer.seconds[-1]


def plain_epoch(cfg, datamodule, steps: int, device: str) -> float:
    """The same model, data, optimizer, schedule, clipping and precision (bfloat16 autocast around the
    forward pass for bf16-mixed, as Lightning's) in a bare loop over float tensors prepared in advance
    (the strictest baseline: rnnexp scales its byte images per batch)."""
    device = torch.device(device)
    x, y = datamodule.splits["train"]
    x, y = x.to(device, torch.float32).div_(255.0), y.to(device)
    model = instantiate(cfg.model, input_size=x.shape[-1], num_classes=10).to(device)
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    size = cfg.data.batch_size
    scheduler = schedule(instantiate(cfg.scheduler), optimizer, steps) if cfg.get("scheduler") else None
    bf16 = cfg.trainer.precision == "bf16-mixed"
    start = time.perf_counter()
    order = torch.randperm(len(y), device=device)
    for i in range(steps):
        idx = order[i * size : (i + 1) * size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            # the objective, and the plain cross-entropy rnnexp logs as train/loss: the same work on both sides
            objective, _ = cross_entropies(model(x[idx]), y[idx], cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if scheduler:
            scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_to(accuracy: float, overrides: list[str]) -> None:
    """Train the default run (`python -m rnnexp.train`, with `overrides`) and print when its validation
    accuracy first reached `accuracy`: seconds of training since fit started (validation included), epoch."""
    with initialize_config_dir(str(CONF), version_base="1.3"), tempfile.TemporaryDirectory() as run_dir:
        cfg = compose("train", overrides=[f"paths.run_dir={run_dir}", *overrides])
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as rnnexp.run does: the run of that seed
        datamodule, module, trainer = build(cfg)
        reached, start = [], time.perf_counter()
        validated = module.on_validation_epoch_end

        def on_validation_epoch_end():
            validated()
            acc = module.val_acc.compute().item() if not trainer.sanity_checking else 0.0
            if acc >= accuracy and not reached:
                reached.append((time.perf_counter() - start, trainer.current_epoch + 1, acc))

        module.on_validation_epoch_end = on_validation_epoch_end
        with contextlib.redirect_stdout(sys.stderr):
            trainer.fit(module, datamodule=datamodule)
        total = time.perf_counter() - start
        what = " ".join(overrides) or "no overrides"
        print(f"default run ({what}), seed {cfg.seed}, precision {trainer.precision}: ", end="")
        if reached:
            seconds, epoch, acc = reached[0]
            print(f"val/acc {acc:.4f} >= {accuracy} after {seconds:.1f} s of training (epoch {epoch}); ", end="")
        else:
            print(f"val/acc never reached {accuracy}; ", end="")
        print(f"best {module.val_acc_best:.4f} after {total:.1f} s ({trainer.current_epoch} epochs)")


def shift_cost(cfg, shift: int = 2) -> float:
    """Seconds that data.shift=`shift` adds to serving one epoch of training batches: the DataModule's
    own training batches with it and without."""
    seconds = []
    for s in (0, shift):
        datamodule = instantiate(cfg.data, shift=s, steps_per_call=cfg.steps_per_call)
        datamodule.setup()  # the parsed files are memoized: no second read
        start = time.perf_counter()
        for _ in datamodule.train_dataloader():
            pass
        seconds.append(time.perf_counter() - start)
    return seconds[1] - seconds[0]


def prepare(cfg) -> tuple[float, float]:
    """Seconds to set up the data twice: parsing the files, then again as the next job of a sweep."""
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        instantiate(cfg.data).setup()
        seconds.append(time.perf_counter() - start)
    return seconds[0], seconds[1]


def compare(args, cell: str, hidden: int, batch: int) -> dict:
    cfg = config(args, cell, hidden, batch, tempfile.gettempdir())
    limit = cfg.trainer.get("limit_train_batches")
    datamodule = instantiate(cfg.data, steps_per_call=cfg.steps_per_call, limit_train_batches=limit)  # as build does
    datamodule.setup()
    timer = EpochTimer()
    batches_per_epoch = -(-len(datamodule.splits["train"][1]) // batch)
    timed_batches = min(limit or batches_per_epoch, batches_per_epoch)
    rnnexp_epoch(cfg, datamodule, timer)  # warm-up, untimed: first-call costs, kernel selection
    plain_epoch(cfg, datamodule, timed_batches, args.device)
    ours, plain = [], []
    for _ in range(args.repeats):
        ours.append(rnnexp_epoch(cfg, datamodule, timer))
        plain.append(plain_epoch(cfg, datamodule, timed_batches, args.device))
    ratios = sorted(o / p for o, p in zip(ours, plain))
    scale = batches_per_epoch / timed_batches  # seconds per full epoch, from the batches timed
    return {
        "name": f"{cell.upper()}-{hidden}" + (f"x{args.layers}" if args.layers > 1 else ""),
        "batch": batch,
        "batches": f"{timed_batches}/{batches_per_epoch}",
        "ours": statistics.median(ours) * scale,
        "plain": statistics.median(plain) * scale,
        "ratio": statistics.median(ratios),
        "spread": (ratios[0], ratios[-1]),
        "samples_per_s": (
            timed_batches * batch / statistics.median(ours),
            timed_batches * batch / statistics.median(plain),
        ),
        "first_step": timer.first_step_at - LAUNCH,
        "raw": (ours, plain),
    }


def header(args) -> str:
    if args.device == "cuda":
        where = torch.cuda.get_device_name()
    else:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")] if Path("/proc/cpuinfo").exists() else []  # fmt: skip
        where = names[0] if names else platform.processor() or "CPU"
    threads = f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    precision = "" if args.time_to is not None else f", {args.precision}"  # the default run's: printed with it
    return f"torch {torch.__version__}, {threads}{precision}, on {args.device}: {where}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(header(args))
    if args.time_to is not None:
        return time_to(args.time_to, args.overrides)
    if not args.grid:
        parse, cached = prepare(config(args, args.cell, args.hidden, args.batch, tempfile.gettempdir()))
        print(f"data setup: {parse:.2f} s reading and validating the files, {cached:.2f} s for a sweep's next job")
        r = compare(args, args.cell, args.hidden, args.batch)
        print(f"launch to end of first training step: {r['first_step']:.1f} s (imports, data, Trainer, sanity check)")
        print(f"{r['name']}, batch {r['batch']}, batches timed per epoch {r['batches']}, {args.repeats} repeats")
        print("repeat  rnnexp s/epoch  plain s/epoch  ratio")
        for i, (o, p) in enumerate(zip(*r["raw"]), 1):
            print(f"{i:>6}  {o:>14.3f}  {p:>13.3f}  {o / p:.3f}")
        print(f"rnnexp {r['ours']:.2f} s/epoch ({r['samples_per_s'][0]:.0f} samples/s), "
              f"plain loop {r['plain']:.2f} s/epoch ({r['samples_per_s'][1]:.0f} samples/s)")  # fmt: skip
        print(f"median ratio {r['ratio']:.3f} (min {r['spread'][0]:.3f}, max {r['spread'][1]:.3f})")
        extra = shift_cost(config(args, args.cell, args.hidden, args.batch, tempfile.gettempdir()))
        print(f"not in the ratio: data.shift=2 (the default run's augmentation) adds {extra:.2f} s per epoch "
              f"({extra / r['ours']:.1%} of rnnexp's)")  # fmt: skip
        return
    grid = [("lstm", h, b) for h in (32, 128, 512) for b in (32, 128, 512)] + [("gru", 128, 128), ("rnn", 128, 128)]
    print("| model | batch | batches timed | rnnexp s/epoch | plain s/epoch | ratio (median) | spread |")
    print("|---|---|---|---|---|---|---|")
    for cell, hidden, batch in grid:
        r = compare(args, cell, hidden, batch)
        print(f"| {r['name']} | {batch} | {r['batches']} | {r['ours']:.2f} | {r['plain']:.2f} | {r['ratio']:.3f} "
              f"| {r['spread'][0]:.3f}-{r['spread'][1]:.3f} |", flush=True)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--batches",
        type=int,
        help="time only this many batches per epoch, rounded up to whole "
        "training steps of steps_per_call (s/epoch is scaled up)",
    )
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"], help="on both sides")
    parser.add_argument("--grid", action="store_true", help="hidden 32/128/512 x batch 32/128/512, and GRU, RNN")
    parser.add_argument("--time-to", type=float, metavar="ACC", help="the default run's seconds to this val/acc")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("overrides", nargs="*", help="config overrides for both sides, e.g. data.root=PATH")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
