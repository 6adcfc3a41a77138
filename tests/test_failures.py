"""The failure policy, case by case: an expected failure (config, data, checkpoint, output folder,
resource, divergence) ends in one `error:` line that names the key or file and what to do, a
non-zero exit, no traceback on the console (it goes to the run's train.log) and metrics.json
`failed` with its reason; a bug keeps its traceback and is recorded as `exception`. No failure
leaves metrics.json at `running`.

Most cases run rnnexp.run.execute in process (conftest's `in_process`); what only the console
entry point does (the one line, the exit code, Hydra creating the run folder, sweeps) runs it as a
subprocess (`run_train`).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CONF, ROOT, TINY, idx_bytes, learnable_digits, record, run_train, write_idx

from rnnexp.run import Failed

QUICK = [*TINY, "trainer.max_epochs=1"]
# An RNN that diverges within its first few steps.
DIVERGE = ["model=rnn", "model.nonlinearity=relu", "optimizer=sgd", "optimizer.lr=1e6", "grad_clip=null"]


def failed(run_dir: Path, reason: str) -> dict:
    """The run's record, checked to say failed for `reason`."""
    metrics = record(run_dir)
    assert metrics["status"] == "failed" and metrics["reason"] == reason, metrics
    return metrics


def one_error_line(result) -> str:
    """The console of an expected failure: a non-zero exit, no traceback, `error:` last on stderr."""
    assert result.returncode not in (0, None), result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-3000:]
    return last


# --- data --------------------------------------------------------------------------------------

REPLACE = "replace it with the original file, or delete it to download it again"


def truncate_gzip(root: Path) -> tuple[Path, str]:
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path, REPLACE


def wrong_magic(root: Path) -> tuple[Path, str]:
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x09\x03" + path.read_bytes()[4:])
    return path, REPLACE


def label_10(root: Path) -> tuple[Path, str]:
    labels = learnable_digits(400, 0)[1]
    labels[17] = 10
    return write_idx(root / "train-labels-idx1-ubyte.gz", labels), REPLACE


def count_mismatch(root: Path) -> tuple[Path, str]:
    return write_idx(root / "t10k-labels-idx1-ubyte", learnable_digits(99, 1)[1]), "replace them with the original"


def empty_file(root: Path) -> tuple[Path, str]:
    return write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((0, 28, 28))), "replace it with the complete"


def directory(root: Path) -> tuple[Path, str]:
    path = root / "t10k-labels-idx1-ubyte"
    path.unlink()
    path.mkdir()
    return path, "remove or rename it"


def differing_twins(root: Path) -> tuple[Path, str]:
    plain = root / "train-images-idx3-ubyte"
    plain.write_bytes(idx_bytes(learnable_digits(400, 7)[0]))  # beside the .gz, other images
    return plain, "remove the stale one"


BREAKAGES = [truncate_gzip, wrong_magic, label_10, count_mismatch, empty_file, directory, differing_twins]


def broken_copy(tiny_mnist: Path, tmp_path: Path, breakage) -> tuple[Path, Path, str]:
    root = shutil.copytree(tiny_mnist, tmp_path / "data")
    path, fix = breakage(root)
    return root, path, fix


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda b: b.__name__)
def test_a_bad_data_file_is_named_with_the_fix(tmp_path, tiny_mnist, in_process, breakage):
    root, path, fix = broken_copy(tiny_mnist, tmp_path, breakage)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, f"data.root={root}", run_dir=run_dir)
    assert isinstance(exc.value, Failed)
    message = str(exc.value)
    assert message.startswith("error: ") and "\n" not in message
    assert str(path) in message and fix in message, message
    metrics = failed(run_dir, "data")
    assert str(path) in metrics["error"]
    log = (run_dir / "train.log").read_text()
    assert "Traceback" in log and "IdxError" in log and str(path) in log
    assert not (run_dir / "checkpoints").exists()  # the data are read before anything is built


def test_a_truncated_gzip_file_ends_the_real_entry_point_in_one_line(tmp_path, tiny_mnist):
    root, path, fix = broken_copy(tiny_mnist, tmp_path, truncate_gzip)
    result = run_train(*QUICK, data=root, out=tmp_path / "out")
    last = one_error_line(result)
    assert str(path) in last and fix in last
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    assert failed(run_dir, "data")["error"] in last
    log = (run_dir / "train.log").read_text()
    assert "Traceback" in log and str(path) in log


NOBODY = 65534  # the unprivileged user the permission tests run as (tests run as root, who reads everything)


@pytest.fixture
def as_nobody(tiny_mnist):
    """`run(*overrides, data=)`: the real entry point as an unprivileged user (setpriv), in a folder that
    user can reach (pytest's are root's alone), with a copy of the tiny data to take permissions from."""
    import os
    import tempfile

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv, to run a process as another user")
    base = Path(tempfile.mkdtemp(prefix="rnnexp-nobody-"))
    base.chmod(0o755)
    (base / "out").mkdir(mode=0o777)
    (base / "out").chmod(0o777)
    data = shutil.copytree(tiny_mnist, base / "data")
    for path in [data, *data.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # pytest's own folders are root's alone
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    env = {**os.environ, "RNNEXP_OUTPUT_DIR": str(base / "out"), "MPLCONFIGDIR": str(base / "out")}
    env.pop("HYDRA_FULL_ERROR", None)
    probe = subprocess.run([*drop, sys.executable, "-c", "import rnnexp.run"], cwd=ROOT, env=env, capture_output=True)
    if probe.returncode != 0:
        shutil.rmtree(base)
        pytest.skip(f"python cannot run as user {NOBODY} here: {probe.stderr.decode()[-300:]}")

    def run(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*drop, sys.executable, "-m", "rnnexp.train", *overrides, f"data.root={data}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    run.data, run.out = data, base / "out"
    yield run
    for path in [data, *data.iterdir()]:
        path.chmod(0o755)
    shutil.rmtree(base)


@pytest.mark.parametrize("unreadable", ["folder", "file"])
def test_data_this_user_may_not_read_are_named_with_the_fix(as_nobody, unreadable):
    path = as_nobody.data if unreadable == "folder" else as_nobody.data / "t10k-labels-idx1-ubyte"
    path.chmod(0o000 if unreadable == "folder" else 0o200)
    result = as_nobody(*QUICK)
    last = one_error_line(result)
    assert last.startswith(f"error: {path}: Permission denied"), last
    chmod = f"(chmod -R a+rX {path})" if unreadable == "folder" else f"(chmod a+r {path})"
    assert chmod in last and last.endswith("or point data.root at a copy this user can read")
    assert "replace it" not in last and "download" not in last  # the file is sound: nothing to replace
    (run_dir,) = (as_nobody.out / "runs").iterdir()
    assert failed(run_dir, "data")["error"] in last
    assert "PermissionError" in (run_dir / "train.log").read_text()


def test_a_validation_split_as_large_as_the_training_set_is_a_config_error(tmp_path, tiny_mnist, in_process):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "data.val_size=400", f"data.root={tiny_mnist}", run_dir=run_dir)
    assert "data.val_size=400: must be between 1 and 399 (there are 400 training images" in str(exc.value)
    failed(run_dir, "config")


# --- checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["/nonexistent.ckpt", "last", "text"])
def test_a_checkpoint_that_is_not_there_or_not_one_is_named(tmp_path, tiny_mnist, in_process, given):
    if given == "text":
        given = tmp_path / "notes.ckpt"
        given.write_text("not a checkpoint\n")
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, f"ckpt_path={given}", f"data.root={tiny_mnist}", run_dir=run_dir)
    message = str(exc.value)
    assert message.startswith(f"error: ckpt_path={given}: ") and "\n" not in message
    assert "give a .ckpt file or a run folder" in message and "resume=<run folder>" in message
    assert ("not a readable checkpoint" if str(given).endswith("notes.ckpt") else "no such file") in message
    failed(run_dir, "checkpoint")


@pytest.fixture(scope="module")
def hidden_8_run(tmp_path_factory, tiny_mnist):
    """A completed tiny run of an LSTM with 8 hidden units, to start others from."""
    run_dir = tmp_path_factory.mktemp("hidden_8") / "run"
    result = run_train(
        *QUICK, "model.hidden_size=8", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}", data=tiny_mnist, out=run_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert record(run_dir)["status"] == "completed"
    return run_dir


@pytest.mark.parametrize("which", ["folder", "file"])
def test_a_checkpoint_of_another_model_shape_names_the_setting_with_both_values(
    tmp_path, tiny_mnist, in_process, hidden_8_run, which
):
    given = hidden_8_run if which == "folder" else hidden_8_run / record(hidden_8_run)["best_checkpoint"]
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "model.hidden_size=16", f"ckpt_path={given}", f"data.root={tiny_mnist}", run_dir=run_dir)
    message = str(exc.value)
    assert message.startswith(f"error: ckpt_path={given}: a checkpoint of another model") and "\n" not in message
    assert "model.hidden_size=8 there, 16 here" in message and "use the same model settings" in message
    failed(run_dir, "checkpoint")


def test_a_checkpoint_of_the_same_model_starts_the_run_from_its_weights(tmp_path, tiny_mnist, in_process, hidden_8_run):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rnnexp.train import build

    best = hidden_8_run / record(hidden_8_run)["best_checkpoint"]
    saved = torch.load(best, weights_only=True)["state_dict"]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*QUICK, "model.hidden_size=8", f"ckpt_path={hidden_8_run}", f"data.root={tiny_mnist}"],
        )
    with open_dict(cfg):
        cfg.paths.run_dir = str(tmp_path / "built")
    _, module, _ = build(cfg)
    weights = module.model.state_dict()
    assert weights.keys() == {k.removeprefix("model.") for k in saved if k.startswith("model.")}
    for key, value in weights.items():
        assert torch.equal(value, saved[f"model.{key}"]), key

    run_dir = tmp_path / "run"  # and the whole run goes through with them
    in_process(*QUICK, "model.hidden_size=8", f"ckpt_path={best}", f"data.root={tiny_mnist}", run_dir=run_dir)
    assert record(run_dir)["status"] == "completed"


# --- resources and the trainer -----------------------------------------------------------------


def test_a_model_too_large_for_memory_is_a_resource_error(tmp_path, tiny_mnist, in_process):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "model.hidden_size=1000000000", f"data.root={tiny_mnist}", run_dir=run_dir)
    message = str(exc.value)
    assert message.startswith("error: out of memory") and "\n" not in message
    assert "use a smaller model.hidden_size" in message
    failed(run_dir, "resource")


def test_a_model_too_large_for_memory_says_how_much_it_asked_for(tmp_path, tiny_mnist, in_process):
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "model.hidden_size=1000000000", f"data.root={tiny_mnist}", run_dir=tmp_path / "run")
    assert "you tried to allocate" in str(exc.value) and "Error in call to target" not in str(exc.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: trainer=gpu would train")
def test_trainer_gpu_without_a_gpu_is_a_config_error(tmp_path, tiny_mnist, in_process):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "trainer=gpu", f"data.root={tiny_mnist}", run_dir=run_dir)
    message = str(exc.value)
    assert message.startswith("error: trainer") and "gpu" in message.lower() and "\n" not in message
    failed(run_dir, "config")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: trainer=gpu would train")
def test_trainer_gpu_without_a_gpu_says_what_to_choose_instead(tmp_path, tiny_mnist, in_process):
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "trainer=gpu", f"data.root={tiny_mnist}", run_dir=tmp_path / "run")
    message = str(exc.value)
    assert "trainer=gpu" in message and ("trainer=cpu" in message or "trainer=auto" in message), message


def test_more_threads_than_cores_is_refused_in_the_job_naming_the_cores(tmp_path, tiny_mnist, in_process):
    from rnnexp.run import available_cores

    cores = available_cores()
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, f"threads={cores + 1}", f"data.root={tiny_mnist}", run_dir=run_dir)
    assert str(exc.value) == (
        f"error: threads={cores + 1}: more than the {cores} cores this process may use, which makes every step "
        f"wait; set threads={cores} or fewer, or threads=null"
    )
    failed(run_dir, "config")
    assert "Traceback" in (run_dir / "train.log").read_text()
    in_process(*QUICK, f"threads={cores}", f"data.root={tiny_mnist}", run_dir=tmp_path / "all")  # all of them: fine
    assert record(tmp_path / "all")["environment"]["threads"] == cores


@pytest.mark.parametrize("accelerator", ["tpu", "mps", "ipu"])
def test_an_accelerator_this_machine_lacks_is_a_config_error(tmp_path, tiny_mnist, in_process, accelerator):
    from pytorch_lightning.accelerators import AcceleratorRegistry

    if accelerator in AcceleratorRegistry.available_accelerators():
        if AcceleratorRegistry[accelerator]["accelerator"].is_available():
            pytest.skip(f"this machine has a {accelerator}")
        fix = f"torch finds no {accelerator} on this machine; use trainer=cpu, or trainer=auto"
    else:
        fix = "not an accelerator Lightning knows; choose one of auto, gpu, cpu, cuda"
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, f"trainer.accelerator={accelerator}", f"data.root={tiny_mnist}", run_dir=run_dir)
    assert str(exc.value).startswith(f"error: trainer.accelerator={accelerator}: {fix}"), exc.value
    failed(run_dir, "config")
    assert not (run_dir / "checkpoints").exists()


def test_a_nan_loss_before_the_first_logging_step_is_caught(tmp_path, tiny_mnist, in_process):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(
            *QUICK, *DIVERGE, "trainer.log_every_n_steps=1000", "scheduler=none", f"data.root={tiny_mnist}",
            run_dir=run_dir,
        )  # fmt: skip
    message = str(exc.value)
    assert message.startswith("error: training loss is nan at step ") and "lower optimizer.lr" in message
    failed(run_dir, "diverged")


# --- output folders ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["RNNEXP_OUTPUT_DIR", "hydra.run.dir"])
def test_an_output_folder_under_a_regular_file_is_named_in_one_line(tmp_path, tiny_mnist, how):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way\n")
    out = blocker / "out"
    if how == "RNNEXP_OUTPUT_DIR":
        result = run_train(*QUICK, data=tiny_mnist, out=out)
    else:
        result = run_train(*QUICK, f"hydra.run.dir={out}/run", data=tiny_mnist, out=tmp_path / "elsewhere")
    last = one_error_line(result)
    assert str(blocker) in last and "point RNNEXP_OUTPUT_DIR (or hydra.run.dir) at a writable folder" in last
    assert blocker.read_text() == "in the way\n"


# --- a full disk --------------------------------------------------------------------------------

FULL = "No space left on device; free space on that disk, or point RNNEXP_OUTPUT_DIR (or hydra.run.dir) at another"


class FullDisk:
    """A file that takes `room` more bytes, then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_a_full_disk_while_writing_last_ckpt_fails_the_run_as_output_and_keeps_the_last_one(
    tmp_path, tiny_mnist, in_process, monkeypatch
):
    from rnnexp.checkpoint import load

    run_dir, saved, real_save = tmp_path / "run", [], torch.save
    last = run_dir / "checkpoints" / "last.ckpt"

    def save(obj, f, *args, **kwargs):  # the second write of last.ckpt finds the disk full halfway
        saved.append(last.read_bytes() if last.exists() else None)
        return real_save(obj, FullDisk(f, room=4096) if len(saved) == 2 else f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(SystemExit) as exc:  # no best checkpoint: every write is last.ckpt's
        in_process(*QUICK, "trainer.max_epochs=3", "~callbacks.checkpoint", f"data.root={tiny_mnist}", run_dir=run_dir)
    assert str(exc.value) == f"error: cannot write the checkpoint {last}: {FULL}"  # torch said RuntimeError
    assert len(saved) == 2 and saved[1] is not None
    metrics = failed(run_dir, "output")
    assert metrics["error"] == str(exc.value).removeprefix("error: ")
    log = (run_dir / "train.log").read_text()
    assert "Traceback" in log and "No space left on device" in log
    assert last.read_bytes() == saved[1]  # the one written before, whole
    assert load(last)["global_step"] * 2 == metrics["steps"]  # the first epoch's end; the second's is not saved
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no half-written temporary file left


def test_a_full_disk_under_tensorboards_writer_thread_fails_the_run_once_as_output(
    tmp_path, tiny_mnist, in_process, monkeypatch, capfd
):
    from tensorboard.summary.writer.record_writer import RecordWriter

    real_write, writes = RecordWriter.write, []

    def write(self, data):  # TensorBoard's thread writes the events: from the fourth on, the disk is full
        writes.append(len(data))
        if len(writes) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "trainer.max_epochs=3", f"data.root={tiny_mnist}", run_dir=run_dir)
    message = str(exc.value)
    assert message.startswith("error: cannot write ") and message.endswith(FULL), message
    failed(run_dir, "output")
    assert "No space left on device" in (run_dir / "train.log").read_text()
    console = capfd.readouterr()
    assert "Traceback" not in console.out + console.err and "Exception in thread" not in console.err, console.err


def test_train_log_on_a_full_disk_says_so_once_not_with_a_traceback_per_line(tmp_path, capsys):
    import logging

    from rnnexp.record import RunLog

    handler = RunLog(tmp_path / "train.log")
    logger = logging.Logger("test")
    logger.addHandler(handler)
    logger.warning("written")
    handler.stream = FullDisk(handler.stream, room=0)
    for n in range(3):
        logger.warning(f"lost {n}")
    handler.stream = handler.stream.f
    handler.close()
    console = capsys.readouterr()
    assert console.err == ""  # logging's own handling prints '--- Logging error ---' and a traceback each time
    assert console.out == f"warning: cannot write {tmp_path / 'train.log'}: {FULL}\n"
    assert (tmp_path / "train.log").read_text().startswith("written\n")


def test_a_record_is_overwritten_in_place_where_a_full_disk_has_no_room_for_a_new_copy(tmp_path, monkeypatch):
    import tempfile

    from rnnexp.record import write_atomic

    path = tmp_path / "metrics.json"
    path.write_text('{"status": "running"}\n')
    room = os.stat(path).st_blocks * 512  # the blocks the file holds

    def mkstemp(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    failed_record = '{"status": "failed", "reason": "output"}\n'
    if len(failed_record) > room:
        pytest.skip(f"this file system holds {path.name} in {room} bytes")
    write_atomic(path, failed_record)
    assert path.read_text() == failed_record
    with pytest.raises(OSError) as err:  # more than the file's blocks take: not written at all, rather than half
        write_atomic(path, "x" * (room + 1))
    assert err.value.errno == errno.ENOSPC and path.read_text() == failed_record


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB file system of its own (tmpfs), where mounting is allowed (root with CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("free_kib", [None, 48], ids=["checkpoints_fill_it", "nearly_full"])
def test_a_real_full_disk_ends_the_run_in_one_line_as_output(small_disk, tiny_mnist, free_kib):
    from rnnexp.checkpoint import load

    if free_kib is not None:  # whatever writes next meets it: TensorBoard, metrics.json, train.log, ...
        room = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        (small_disk / "filler").write_bytes(bytes(room - free_kib * 1024))
    # an LSTM-128's checkpoints take 1 MB each: the best, last.ckpt and the next one's temporary file fill 3 MiB
    result = run_train(*QUICK, "model.hidden_size=128", "trainer.max_epochs=4", data=tiny_mnist, out=small_disk / "out")
    last = one_error_line(result)
    assert last.endswith(FULL), last
    (run_dir,) = (small_disk / "out" / "runs").iterdir()
    if free_kib is None or (run_dir / "metrics.json").exists():
        failed(run_dir, "output")
    if free_kib is None:
        assert "Traceback" in (run_dir / "train.log").read_text()
        assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] > 0  # whole: written aside, renamed
        assert not list((run_dir / "checkpoints").glob(".*.tmp"))


# --- sweeps ------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", ["16,0", "0,16"])
def test_a_sweep_with_a_bad_job_names_it_and_trains_nothing(tmp_path, tiny_mnist, values):
    result = run_train("-m", *QUICK, f"model.hidden_size={values}", data=tiny_mnist, out=tmp_path)
    last = one_error_line(result)
    bad = values.split(",").index("0")
    assert last.startswith("error: 1 of 2 jobs cannot run, so none was started: ")
    assert f"job {bad} (model.hidden_size=0): model.hidden_size=0: must be an integer >= 1" in last
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("events.out.*"))


def test_a_sweep_goes_on_past_a_failed_job_and_fails_at_the_end(tmp_path, tiny_mnist):
    diverge = [o for o in DIVERGE if not o.startswith("optimizer.lr")]
    result = run_train(
        "-m", *QUICK, *diverge, "scheduler=none", "optimizer.lr=0.01,1e6,0.003", data=tiny_mnist, out=tmp_path
    )
    last = one_error_line(result)
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: p.name)
    assert [p.name for p in jobs] == ["0_optimizer.lr=0.01", "1_optimizer.lr=1000000.0", "2_optimizer.lr=0.003"]
    assert [record(p)["status"] for p in jobs] == ["completed", "failed", "completed"]
    assert record(jobs[1])["reason"] == "diverged"
    assert "1_optimizer.lr=1000000.0" in last and "training loss is nan" in last
    assert "Traceback" in (jobs[1] / "train.log").read_text()
    summary = yaml.safe_load((sweep / "summary.yaml").read_text())  # written although the sweep failed
    assert summary["completed"] == 2 and [f["reason"] for f in summary["failures"]] == ["diverged"]
    assert summary["best"]["job"] in ("0_optimizer.lr=0.01", "2_optimizer.lr=0.003")
    assert "3 jobs: 2 completed, 1 failed" in result.stdout


# --- bugs --------------------------------------------------------------------------------------


def test_a_bug_keeps_its_exception_and_is_recorded_as_one(tmp_path, tiny_mnist, in_process):
    def task(cfg, job):
        return {"ratio": 1 / 0}

    run_dir = tmp_path / "run"
    with pytest.raises(ZeroDivisionError) as exc:
        in_process(*QUICK, f"data.root={tiny_mnist}", run_dir=run_dir, task=task)
    assert not isinstance(exc.value, SystemExit) and exc.value.__traceback__ is not None
    metrics = failed(run_dir, "exception")
    assert metrics["error"] == "ZeroDivisionError: division by zero"


def run_task(task: str, *overrides: str) -> subprocess.CompletedProcess:
    """The console entry point, rnnexp.run.main around a Hydra task function, with `task` (the source
    of a function `task(cfg, job)`) in place of fit_and_test."""
    app = [
        "import sys",
        "from hydra.utils import instantiate",
        "from rnnexp import run",
        task,
        "def train(cfg):",
        "    return run.execute(cfg, task)",
        f"sys.exit(run.main(run.hydra_app(train, 'train'), {list(overrides)!r}))",
    ]
    return subprocess.run([sys.executable, "-c", "\n".join(app)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_bug_keeps_its_traceback_on_the_console(tmp_path, tiny_mnist):
    task = "def task(cfg, job):\n    return {'ratio': 1 / 0}"
    result = run_task(task, *QUICK, f"data.root={tiny_mnist}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1] == (
        "ZeroDivisionError: division by zero"
    )
    assert "error:" not in result.stderr
    failed(tmp_path / "run", "exception")


# --- found by probing the entry point, each a bug once ---------------------------------------------


def test_a_bug_inside_instantiate_keeps_its_traceback_on_the_console(tmp_path, tiny_mnist):
    task = "def task(cfg, job):\n    return instantiate({'_target_': 'operator.truediv', '_args_': [1, 0]})"
    result = run_task(task, *QUICK, f"data.root={tiny_mnist}", f"hydra.run.dir={tmp_path / 'run'}")
    failed(tmp_path / "run", "exception")
    assert result.returncode != 0 and "Traceback" in result.stderr, result.stderr[-2000:]


def test_fast_dev_run_completes(tmp_path, tiny_mnist, in_process):
    in_process(*QUICK, "+trainer.fast_dev_run=true", f"data.root={tiny_mnist}", run_dir=tmp_path / "run")
    assert record(tmp_path / "run")["status"] == "completed"


def test_a_validation_interval_longer_than_an_epoch_is_a_config_error(tmp_path, tiny_mnist, in_process):
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "+trainer.val_check_interval=1000", f"data.root={tiny_mnist}", run_dir=tmp_path / "run")
    assert "val_check_interval" in str(exc.value)
    failed(tmp_path / "run", "config")


def test_a_checkpoint_folder_that_cannot_be_written_is_an_output_error(tmp_path, tiny_mnist, in_process):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way\n")
    with pytest.raises(SystemExit) as exc:
        in_process(
            *QUICK, f"callbacks.checkpoint.dirpath={blocker}/checkpoints", f"data.root={tiny_mnist}",
            run_dir=tmp_path / "run",
        )  # fmt: skip
    assert str(blocker) in str(exc.value)
    failed(tmp_path / "run", "output")


def test_a_learning_rate_beyond_float32_is_refused_in_one_line(tmp_path, tiny_mnist, in_process):
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "optimizer.lr=1e300", f"data.root={tiny_mnist}", run_dir=tmp_path / "run")
    assert "optimizer.lr" in str(exc.value)


def test_a_new_run_in_a_folder_that_holds_a_run_is_refused(tmp_path, tiny_mnist, in_process):
    run_dir = tmp_path / "run"
    in_process(*QUICK, f"data.root={tiny_mnist}", run_dir=run_dir)
    first = record(run_dir)
    with pytest.raises(SystemExit) as exc:
        in_process(*QUICK, "model.hidden_size=8", f"data.root={tiny_mnist}", run_dir=run_dir)
    assert str(run_dir) in str(exc.value) and "resume=" in str(exc.value)
    assert record(run_dir) == first


@pytest.mark.parametrize("content", [b"hi\n", b"\x80\x02}q\x00.", b"PK\x03\x04 not a zip", b""])
def test_a_file_that_is_not_a_checkpoint_is_named_in_one_line(tmp_path, content):
    from rnnexp.checkpoint import load
    from rnnexp.errors import CheckpointError

    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: not") and "\n" not in str(err.value)
