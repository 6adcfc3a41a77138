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


def global_state() -> dict:
    """Hydra's process-wide state (its config loader and search path, the plugins found), which a job
    started in another process needs to compose and run: what hydra-submitit-launcher hands each job.
    hydra.core.singleton's Singleton.get_state: no public API."""
    from hydra.core.singleton import Singleton

    return Singleton.get_state()


def run_hydra(task, config_dir, config_name: str, argv: list[str]) -> None:
    """What `@hydra.main(version_base="1.3", config_path=config_dir, config_name=...)` does with the
    command line, given `argv` rather than reading sys.argv: so that an entry point runs on the
    arguments it is handed (a test's, in process) and nothing rewrites sys.argv. hydra.main has no
    such parameter; its parser and runner are hydra._internal.utils' get_args_parser and _run_hydra."""
    from hydra import version
    from hydra._internal.utils import _run_hydra, get_args_parser

    version.setbase(VERSION)
    parser = get_args_parser()
    _run_hydra(
        args=parser.parse_args(argv),
        args_parser=parser,
        task_function=task,
        config_path=str(config_dir),
        config_name=config_name,
    )
