"""The store of an Optuna search (`hydra.sweeper.storage`): its URL made absolute, the store opened
(SQLite, a journal file, a database server, or memory) so that two processes opening a fresh one at
once both succeed, and what goes wrong with it said in one line that names the setting.

Used by both sides of a search: the sweeper (hydra_plugins/rnnexp_sweepers) and each trial's job
(rnnexp.study); importable without torch or Lightning, so that `python -m rnnexp.report` of a search
does not wait for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from rnnexp.errors import ConfigError, ExpectedError, OutputError, StoreError

# The Python module SQLAlchemy imports for a URL's database, and the package that holds it.
DRIVERS = {
    "psycopg": "'psycopg[binary]'",  # SQLAlchemy 2.1's postgresql://
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "cx_Oracle": "cx_Oracle",
}


JOURNAL = "journal:///"  # Optuna's journal file storage: journal:///rel/path.log, journal:////abs/path.log


def storage_url(storage: Any) -> Any:
    """A SQLite or journal URL with an absolute path (`sqlite:///rel` is relative to the working
    directory of whichever process opens it), its folder created: SQLite does not create it."""
    if not isinstance(storage, str) or storage == "sqlite:///:memory:":
        return storage
    scheme = next((s for s in ("sqlite:///", JOURNAL) if storage.startswith(s)), None)
    if scheme is None:
        return storage
    path = Path(storage.removeprefix(scheme)).expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"{_key(storage)}: cannot create its folder {path.parent} ({err.strerror}: {err.filename}); point "
            "hydra.sweeper.storage at a file in a writable folder"
        ) from err
    return f"{scheme}{path}"


def open_storage(storage: Any):
    """The optuna storage of `hydra.sweeper.storage` (after storage_url): in memory for null, a
    JournalStorage for journal:///<file> (its lock a symlink, which works on NFS), else an RDBStorage.
    Two processes that open a fresh database at once race to create its tables ("table studies
    already exists", a duplicate version row). A fresh SQLite file therefore appears whole
    (_sqlite_created_whole); a server database, or a file another program is creating, is opened
    again once the winner is done."""
    import optuna
    import sqlalchemy.exc
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

    if storage is None:
        return optuna.storages.InMemoryStorage()
    if str(storage).startswith(JOURNAL):
        path = str(storage).removeprefix(JOURNAL)
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileSymlinkLock(path)))
    if str(storage).startswith("sqlite:///") and "?" not in str(storage):
        _sqlite_created_whole(Path(str(storage).removeprefix("sqlite:///")))
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(str(storage))
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as err:
            racing = isinstance(err, sqlalchemy.exc.IntegrityError) or "already exists" in str(err)
            if not racing or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))  # the other process is still creating the schema


def _sqlite_created_whole(path: Path) -> None:
    """A SQLite study file that does not exist yet is made with all its tables under a name of its
    own, then linked into place (a link never replaces a file): whoever opens `path` finds it
    complete or absent, never half-made; of two processes creating it at once, one link wins and
    the other's copy is dropped. Where the file system cannot link, the file is left to the
    retries of open_storage."""
    import optuna
    import sqlalchemy.exc

    if path == Path(":memory:") or path.exists():
        return
    draft = path.with_name(f".{path.name}.{os.getpid()}.creating")
    try:
        optuna.storages.RDBStorage(f"sqlite:///{draft}").engine.dispose()
        os.link(draft, path)
    except FileExistsError:  # another process's copy won
        pass
    except (OSError, sqlalchemy.exc.SQLAlchemyError):  # no hard links here (some network and FUSE
        pass  # file systems), or no room: the open that follows names what is wrong
    finally:
        draft.unlink(missing_ok=True)


@contextlib.contextmanager
def storage_errors(storage: Any):
    """Around opening or writing a study's storage (`hydra.sweeper.storage`, an SQLAlchemy URL): what
    is wrong with it, in one line that names the URL (without its password): a scheme no installed
    driver serves, a driver that is missing, a file that is not a database, a full disk."""
    import errno
    import sqlite3

    import optuna
    import sqlalchemy.exc

    try:
        yield
    except (ImportError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        if str(storage).startswith(JOURNAL):
            raise _journal_error(storage, err) from err
        chain = _chain(err)  # optuna wraps what a commit raises in StorageInternalError
        database = next((e for e in chain if isinstance(e, sqlalchemy.exc.DatabaseError)), None)
        if isinstance(err, ImportError):  # optuna's, from SQLAlchemy's import of the driver
            missing = next((e.name for e in chain if isinstance(e, ModuleNotFoundError) and e.name), None)
            install = f"pip install {DRIVERS.get(missing, missing)}" if missing else "install its database driver"
            raise ConfigError(
                f"{_key(storage)}: its database driver{f' ({missing})' if missing else ''} is not installed; "
                f"{install}, or keep the study in SQLite (hydra.sweeper.storage=sqlite:///<file>)"
            ) from err
        if isinstance(err, sqlalchemy.exc.ArgumentError):  # NoSuchModuleError: a scheme no dialect serves
            raise ConfigError(
                f"{_key(storage)}: not a database URL SQLAlchemy can open ({_first(err)}); use sqlite:///<file> (the "
                "default keeps outputs/optuna.db), or postgresql://... or mysql://... with their drivers installed"
            ) from err
        if database is None:
            raise
        cause = database.orig or database
        if getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:  # a trial reporting to a full disk
            raise OutputError(
                f"{_key(storage)}: cannot write the study's database ({_first(cause)}); free space on its disk"
            ) from err
        if str(storage).startswith("sqlite:///") and "not a database" in str(cause):
            path = str(storage).removeprefix("sqlite:///")
            raise StoreError(
                f"{_key(storage)}: {path} is not an SQLite database ({_first(cause)}); move it away to start the "
                "study afresh, or point hydra.sweeper.storage at the study's database"
            ) from err
        raise StoreError(
            f"{_key(storage)}: the study's database failed ({_first(cause)}); check the URL, that the database is "
            "up and this user may write to it"
        ) from err
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:  # a journal
        if not str(storage).startswith(JOURNAL) or isinstance(err, ExpectedError):
            raise
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise OutputError(
                f"{_key(storage)}: cannot write the study's journal ({err.strerror}); free space on its disk"
            ) from err
        raise _journal_error(storage, err) from err


def _journal_error(storage: Any, err: BaseException) -> StoreError:
    path = str(storage).removeprefix(JOURNAL)
    what = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) and err.strerror else _first(err)
    fix = (
        "point hydra.sweeper.storage at a file in a folder this user can write"
        if isinstance(err, OSError)  # the file system refused it: nothing in the file to move away
        else "move it away to start the study afresh, or point hydra.sweeper.storage at the study's journal"
    )
    return StoreError(f"{_key(storage)}: {path} cannot be read or written as an Optuna journal ({what}); {fix}")


def _key(storage: Any) -> str:
    """`hydra.sweeper.storage=<URL>`, a password in it hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        shown = make_url(str(storage)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        shown = str(storage)
    return f"hydra.sweeper.storage={shown}"


def _chain(err: BaseException) -> list[BaseException]:
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _first(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
