"""The failures a user can fix, as opposed to bugs.

An expected failure (a config value, a data file, a checkpoint, an output folder, a resource) ends a
run with one console line, `error: <message>`, naming the key or file and what to do; its traceback
goes to the run's train.log. Anything else is a bug and keeps its traceback on the console. This
module imports nothing heavy: the config checks raise these before torch is imported.
"""

from __future__ import annotations


class ExpectedError(Exception):
    """A failure the user can fix; the message is one line that names the key or file and the fix.

    `reason` is what the run's metrics.json records beside `status: failed`.
    """

    reason = "error"


class ConfigError(ExpectedError, ValueError):
    """A config value that cannot work; the message names the key and what is allowed."""

    reason = "config"


class DataError(ExpectedError, ValueError):
    """A data file is missing, malformed or inconsistent; the message names the file."""

    reason = "data"


class CheckpointError(ExpectedError):
    """A checkpoint that is missing, unreadable or of another model; the message names the file."""

    reason = "checkpoint"


class OutputError(ExpectedError):
    """A run folder or record that cannot be written."""

    reason = "output"


class StoreError(ExpectedError):
    """A store a run or sweep keeps its state in (an Optuna study's database) that cannot be opened."""

    reason = "store"


class ResourceError(ExpectedError):
    """Not enough of something the run needs: memory, a GPU."""

    reason = "resource"


class Diverged(ExpectedError, FloatingPointError):
    """The training loss became NaN or infinite."""

    reason = "diverged"
