"""Shared test helpers: tiny generated IDX files, the real MNIST and Fashion-MNIST folders, and the real entry
point."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import re
import signal
import struct
import subprocess
import subprocess as _subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REAL_MNIST = Path(os.environ.get("RNNEXP_DATA_DIR", ROOT.parent / "shared" / "data" / "mnist"))
REAL_FASHION_MNIST = Path(os.environ.get("RNNEXP_FASHION_MNIST_DIR", ROOT.parent / "shared" / "data" / "fashion-mnist"))


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    header = magic if magic is not None else bytes([0, 0, 8, array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, **kwargs) -> Path:
    data = idx_bytes(array, **kwargs)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def learnable_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose label is which pair of rows is bright, plus noise: a row-reading RNN learns it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 4 : 2 * k + 6] = 255
    return images, labels


def write_mnist(root: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    """The four MNIST files, tiny: train files gzip-compressed, test files plain. Another `seed` (by 2 or more)
    gives four files of other content."""
    root.mkdir(parents=True, exist_ok=True)
    train, test = learnable_digits(n_train, seed), learnable_digits(n_test, seed + 1)
    write_idx(root / "train-images-idx3-ubyte.gz", train[0])
    write_idx(root / "train-labels-idx1-ubyte.gz", train[1])
    write_idx(root / "t10k-images-idx3-ubyte", test[0])
    write_idx(root / "t10k-labels-idx1-ubyte", test[1])
    return root


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("tiny_mnist"))


def _real(folder: Path, what: str, variable: str) -> Path:
    """A folder of real data, or a skip where it is missing (a failure with CI=true)."""
    if not all((folder / f"{n}.gz").exists() or (folder / n).exists() for n in REAL_FILES):
        message = f"real {what} not found in {folder} (set {variable})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    return _real(REAL_MNIST, "MNIST", "RNNEXP_DATA_DIR")


@pytest.fixture(scope="session")
def real_fashion_mnist() -> Path:
    return _real(REAL_FASHION_MNIST, "Fashion-MNIST", "RNNEXP_FASHION_MNIST_DIR")


REAL_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# Small and quick: what the entry-point tests train unless they say otherwise.
TINY = [
    "data.val_size=50",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "model.hidden_size=16",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=2",
    "optimizer.lr=0.03",
    "data.shift=0",  # the tiny digits fill their frame: a shift would cut them
    "label_smoothing=0",  # what the tiny runs' accuracy bars were set with
    "trainer.precision=32-true",  # not auto: the hardware decides that, and runs compared must train alike
]


def run_train(
    *overrides: str, data: Path, out: Path, timeout: float = 300, subprocess: bool = False
) -> subprocess.CompletedProcess:
    """`python -m rnnexp.train <overrides>` as a researcher types it: its exit code and console text.
    In this process (rnnexp.train.main(argv), as a console script calls it: no 4 s of imports per
    run) unless `subprocess` (for what needs a process of its own: several devices, signals).
    `timeout` bounds the subprocess; in process, the per-test time limit does."""
    env = {"RNNEXP_DATA_DIR": str(data), "RNNEXP_OUTPUT_DIR": str(out)}
    if not subprocess:
        return cli("rnnexp.train", *overrides, env=env)
    return _subprocess.run(
        [sys.executable, "-m", "rnnexp.train", *overrides],
        cwd=ROOT,
        env=_without_hydra_full_error({**os.environ, **env}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _without_hydra_full_error(env: dict) -> dict:
    env.pop("HYDRA_FULL_ERROR", None)  # the entry point sets it itself
    return env


@contextlib.contextmanager
def process_state_restored():
    """Around an entry point or Hydra app run in this process: what it leaves in global state is undone
    afterwards: the environment, the root logger's handlers (Hydra's job logging: a console handler on
    this test's captured output, which is closed once the test ends, and train.log's), Hydra's global
    state, torch's threads."""
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    environ, root = dict(os.environ), logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, torch.get_num_threads()
    try:
        yield
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        HydraConfig.instance().cfg = None
        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(environ)


def cli(module: str, *argv: str, env: dict | None = None) -> _subprocess.CompletedProcess:
    """An entry point's `main(argv)` (rnnexp.train, rnnexp.evaluate, rnnexp.predict, rnnexp.report) in
    this process: its exit code and what it printed, as `python -m <module> <argv>` would give them;
    what it leaves in global state undone (process_state_restored)."""
    import importlib

    stdout, stderr = io.StringIO(), io.StringIO()
    with process_state_restored():
        os.environ.update(env or {})
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = importlib.import_module(module).main(list(argv))
            except Exception:  # a bug: a console process would print its traceback and exit 1
                traceback.print_exc()
                code = 1
    return _subprocess.CompletedProcess([module, *argv], code, stdout.getvalue(), stderr.getvalue())


def trained(*overrides: str, data: Path, out: Path) -> Path:
    """The folder of a run of the real entry point that completed (out/runs/<its one folder>)."""
    result = run_train(*overrides, data=data, out=out)
    assert result.returncode == 0, result.stderr[-3000:]
    return only((out / "runs").iterdir())


def terminal(ignored=()):
    """For subprocess.Popen(preexec_fn=...): SIGINT and SIGHUP are the process's own to handle, as for a
    command typed in a terminal, even where the tests run with them ignored (in the background of a
    script, under nohup), which the process would inherit; the signals named in `ignored` are ignored,
    as nohup ignores SIGHUP."""

    def signals():
        for name in ("SIGINT", "SIGHUP"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        for name in ignored:
            signal.signal(getattr(signal, name), signal.SIG_IGN)

    return signals


def stop_at(
    point: str, n: int, signal_name: str, *overrides: str, data: Path, out: Path, timeout: float = 300, ignored=()
):
    """The entry point, stopped by `signal_name` the `n`th time the run reaches `point` (tests/kill_at.py says
    which points there are). In a session of its own, so that nothing it started outlives it (the other
    processes of a DDP run whose first process was killed). Its signals as in a terminal (`terminal`)."""

    env = {**os.environ, "RNNEXP_DATA_DIR": str(data), "RNNEXP_OUTPUT_DIR": str(out)}
    env["KILL_AT"] = f"{point}:{n}:{signal_name}"
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, str(ROOT / "tests" / "kill_at.py"), *overrides]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=terminal(ignored))  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a run folder's TensorBoard event files: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# --- the run lifecycle in process ------------------------------------------------------------------


@pytest.fixture
def in_process():
    """`run(*overrides, run_dir=..., task=...)`: rnnexp.run.execute on the real composed config, in
    this process, as lightning-hydra-template's tests run their task functions: a few seconds faster
    than `run_train` and the exception itself to look at (a single run's expected failure is
    rnnexp.run.Failed, a SystemExit; catch it with pytest.raises(SystemExit)).

    Hydra configures logging only under @hydra.main, so the run's train.log file handler is added
    here as Hydra's job logging would. Whatever the run leaves behind in global state is undone
    afterwards: Hydra's GlobalHydra and HydraConfig, the handler, the environment variables
    Lightning's seed_everything sets.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    environ = dict(os.environ)
    root = logging.getLogger()
    handlers = []

    def run(*overrides: str, run_dir: Path, task=None, multirun: bool = False):
        from hydra import compose, initialize_config_dir
        from omegaconf import open_dict

        import rnnexp.run
        import rnnexp.train

        mode = ["hydra.mode=MULTIRUN"] if multirun else []
        with initialize_config_dir(str(CONF), version_base="1.3", job_name="train"):
            cfg = compose("train", overrides=[*mode, *overrides, f"paths.run_dir={run_dir}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # what @hydra.main does: ${hydra:...}, mode, choices
        with open_dict(cfg):
            del cfg["hydra"]  # a task function never sees the hydra node
        handler = logging.FileHandler(Path(run_dir) / "train.log", delay=True)  # opened on first use
        root.addHandler(handler)
        handlers.append(handler)
        return rnnexp.run.execute(cfg, task or rnnexp.train.fit_and_test)

    yield run
    for handler in handlers:
        root.removeHandler(handler)
        handler.close()
    HydraConfig.instance().cfg = None
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    os.environ.clear()
    os.environ.update(environ)


def only(paths):
    """The one path of `paths` (a folder's only run, say)."""
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


def record(run_dir: Path) -> dict:
    """A run folder's metrics.json."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())


# --- the quick subset: pytest -m "not slow" -------------------------------------------------------

# What makes a test slow: it trains, or starts a process (about 4 s of imports each). A test is marked
# `slow` where its body, or a fixture it uses from its own module or this file, calls one of these;
# a test may also carry @pytest.mark.slow itself.
SLOW_CALLS = (
    "run_train(", "cli(", "entry(", "in_process", "stop_at(", "trained(", "popen_train(", "Popen(",
    "subprocess.run(", "benchmark(", ".fit(", "start(",
)  # fmt: skip


def _slow(function, module, seen: set) -> bool:
    import inspect

    if function is None or id(function) in seen:
        return False
    seen.add(id(function))
    function = inspect.unwrap(getattr(function, "__wrapped__", function))
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    if any(call in source for call in SLOW_CALLS):
        return True
    names = [*inspect.signature(function).parameters, *re.findall(r"\b(\w+)\(", source)]  # fixtures, functions called
    return any(_slow(_function(module, n), module, seen) for n in names)


def _function(module, name: str):
    found = getattr(module, name, None) or globals().get(name)
    return found if callable(found) and getattr(found, "__module__", None) in (module.__name__, __name__) else None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is None and _slow(item.function, item.module, set()):
            item.add_marker(pytest.mark.slow)
