"""`python -m rnnexp.train`, stopped at a named point of the run's own progress (for tests/test_kill_anywhere.py).

    KILL_AT=<point>:<n>:<signal> python tests/kill_at.py [overrides ...]

sends <signal> (SIGKILL, SIGTERM, SIGINT, SIGHUP, ...) to this very process the <n>th time the run
reaches <point>, then lets the run go on as it would after a real signal arriving there. (Given in
the environment, so that the command line is the run's own: Lightning's ddp starts the other
processes of a run with it; they inherit KILL_AT but only the first process, rank 0, is stopped.)
The points:

    train_call          after a training step of the module (steps_per_call optimizer steps) and its checkpoint
    validation_end      after a validation and its checkpoints
    epoch_end           after an epoch's end (its log line)
    checkpoint_writing  a checkpoint file written in full beside its place, not yet renamed into it
    checkpoint_written  a checkpoint file renamed into its place
    fit_end             after fitting, before testing
    test_batch          after a batch of the test
    record_completed    the record about to say `completed`

A point is counted where the run reaches it, not by time, so a test kills at the same place on a
loaded machine as on an idle one.
"""

from __future__ import annotations

import os
import signal

from pytorch_lightning.callbacks import Callback

POINT, N, SIGNAL = os.environ["KILL_AT"].split(":")
N, SIGNAL = int(N), getattr(signal, SIGNAL)
RANK_ZERO = all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK"))
seen = 0


def reached(point: str) -> None:
    global seen
    if point != POINT or not RANK_ZERO:
        return
    seen += 1
    if seen == N:
        os.kill(os.getpid(), SIGNAL)  # delivered before this call returns (the main thread's own signal)


class At(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        reached("train_call")

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            reached("validation_end")

    def on_train_epoch_end(self, trainer, pl_module):
        reached("epoch_end")

    def on_fit_end(self, trainer, pl_module):
        reached("fit_end")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        reached("test_batch")


def main() -> None:
    import rnnexp.record
    import rnnexp.train

    build = rnnexp.train.build

    def build_with_points(cfg, job=None):
        datamodule, module, trainer = build(cfg, job)
        trainer.callbacks.append(At())  # last: after the checkpoint callbacks of each hook
        return datamodule, module, trainer

    rnnexp.train.build = build_with_points

    replace = os.replace

    def replace_with_points(src, dst, *args, **kwargs):
        if str(dst).endswith(".ckpt"):
            reached("checkpoint_writing")
        replace(src, dst, *args, **kwargs)
        if str(dst).endswith(".ckpt"):
            reached("checkpoint_written")

    os.replace = replace_with_points

    update = rnnexp.record.RunRecord.update

    def update_with_points(self, **fields):
        if fields.get("status") == "completed":
            reached("record_completed")
        update(self, **fields)

    rnnexp.record.RunRecord.update = update_with_points

    raise SystemExit(rnnexp.train.main())


if __name__ == "__main__":
    main()
