"""torch.utils.tensorboard's internals rnnexp relies on, written for torch 2.13."""

from __future__ import annotations

VERSION = "2.13"


def file_writer(writer):
    """The event-file writer of a SummaryWriter (created on first use), through which raw Summary
    protos are written (the HParams session records), as Lightning's own log_hyperparams does."""
    return writer._get_file_writer()
