"""hydra-core's internals rnnexp relies on, written for hydra-core 1.3 (1.3.8). Each has no public API."""

from __future__ import annotations

from hydra.core.utils import JobReturn

VERSION = "1.3"


def grid_jobs(parsed_overrides: list) -> list[list[str]]:
    """Every job of a grid sweep, as the basic sweeper splits the parsed command line into jobs (its
    `BasicSweeper.split_arguments`, under hydra._internal), so that they can be checked before any runs."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(parsed_overrides, None)[0]


def failed_job_error(ret: JobReturn) -> BaseException | None:
    """The exception a FAILED job raised. The public `return_value` re-raises it, after writing "Error
    executing job with overrides" to stderr; the exception itself is only in `_return_value`."""
    err = getattr(ret, "_return_value", None)
    return err if isinstance(err, BaseException) else None
