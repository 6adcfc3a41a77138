"""What a run says on the console besides its progress: its own few lines before the first step (data,
model, precision, run folder) and after the last (where the run is, what to run next), and third-party
lines that do not concern the user, each filtered at its source by its message (a logging.Filter on
the logger that emits it, a warnings filter on the message and module), never a whole logger or
category."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

# Lightning's rank_zero_info lines (the logger of pytorch_lightning.utilities.rank_zero): the devices it
# did not use, and an advert for another product.
LIGHTNING_LINES = re.compile(r"GPU available: |TPU available: |💡 Tip: ")
# (message, module that warns): Lightning's hint to use srun on any machine with Slurm installed (rnnexp
# runs Slurm jobs itself); torch's deprecation of a call inside Lightning; Lightning's comparison of
# log_every_n_steps with its training steps (several optimizer steps each: the module logs by optimizer
# step itself, so it does not apply).
WARNINGS = (
    (r"The `srun` command is available on your system but is not used", r"lightning_fabric\.plugins\.environments"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\."),
    (r"The number of training batches .* is smaller than the logging interval", r"pytorch_lightning\.loops"),
)


class DropLines(logging.Filter):
    """Drops the records whose message starts with `pattern`."""

    def __init__(self, pattern: re.Pattern):
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_lightning() -> None:
    """Filter LIGHTNING_LINES and WARNINGS at their sources. Called by each run, as it builds its Trainer:
    a warnings filter set earlier may have been undone since (warnings.catch_warnings restores them)."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, DropLines) for f in logger.filters):
        logger.addFilter(DropLines(LIGHTNING_LINES))
    for message, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)  # the same filter again replaces it


def next_commands(run_dir: Path) -> list[str]:
    """What to run on a finished run: its curves, its evaluation."""
    return [f"tensorboard --logdir {run_dir}", f"python -m rnnexp.evaluate ckpt_path={run_dir}"]
