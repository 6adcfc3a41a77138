"""Training progress: one kept line per epoch, and on a terminal TQDM's bar in between."""

import errno
import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from types import SimpleNamespace

from conftest import ROOT, TINY
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from rnnexp.progress import EpochLines, StepBar, epoch_of, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_lines_elsewhere(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal())
    bar = progress_bar(refresh_rate=7)
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 7
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert isinstance(progress_bar(refresh_rate=7), EpochLines)


def test_run_logged_to_a_file_has_one_plain_line_per_epoch(tmp_path, tiny_mnist):
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "rnnexp.train", *TINY, "model=rnn", "trainer.max_epochs=3"]
    with open(tmp_path / "out.log", "wb") as out, open(tmp_path / "err.log", "wb") as err:
        assert subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, timeout=300).returncode == 0
    stdout, stderr = (tmp_path / "out.log").read_bytes(), (tmp_path / "err.log").read_bytes()
    assert b"\r" not in stdout and b"\r" not in stderr  # read as bytes: text mode would turn \r into \n
    lines = re.findall(r"epoch (\d+)/3, step (\d+), (.*), ([\d.]+) s$", stdout.decode(), re.M)
    assert [(int(e), int(s)) for e, s, _, _ in lines] == [(1, 11), (2, 22), (3, 33)]
    for _, _, metrics, _ in lines:  # each after its epoch's validation
        assert re.fullmatch(r"train/loss [\d.]+, train/acc [\d.]+, val/loss [\d.]+, val/acc [\d.]+", metrics)


def test_the_bar_fits_80_columns_with_the_epoch_of_all_and_the_latest_validation_accuracy():
    # a full MNIST epoch of the default run late in a long one: the widest numbers the bar shows
    trainer = SimpleNamespace(
        current_epoch=11,
        max_epochs=100,
        progress_bar_metrics={"train/loss": 0.41234, "train/acc": 0.87109375, "val/acc": 0.98420000076, "v_num": 3},
    )
    bar = Tqdm(total=430, file=io.StringIO(), ncols=80, bar_format=StepBar.TRAIN_FORMAT, desc=epoch_of(trainer))
    bar.n, bar.start_t = 412, bar.start_t - 83  # 1:23 into the epoch
    bar.set_postfix(StepBar().get_metrics(trainer, None))
    line = str(bar)
    assert len(line) <= 80, line
    assert re.fullmatch(
        r"epoch 12/100 \|\S+ *\| 412/430 \[01:23<00:0\d, loss=0\.412, acc=0\.871, val/acc=0\.9842\]", line
    )


def test_a_run_without_an_epoch_limit_counts_its_epochs_alone():
    assert epoch_of(SimpleNamespace(current_epoch=4, max_epochs=-1)) == "epoch 5"


def on_a_terminal(command: list[str], env: dict, columns: int, timeout: float) -> str:
    """What `command` writes to a terminal `columns` wide (a pseudo-terminal: tqdm draws its bar only on a
    terminal, sized by it), as written: carriage returns and escapes included."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**env, "COLUMNS": str(columns), "LINES": "24"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], deadline - time.monotonic())
            if not ready:
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError as err:  # EIO: the terminal's other end closed (the process and its children ended)
                if err.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
        else:
            raise AssertionError(f"still running after {timeout} s: {out.decode(errors='replace')[-3000:]}")
        assert proc.wait(timeout=30) == 0, out.decode(errors="replace")[-3000:]
    finally:
        proc.kill()
        proc.wait()
        os.close(main)
    return out.decode()


def test_on_an_80_column_terminal_each_epoch_leaves_its_line_and_the_bar_fits(tmp_path, tiny_mnist):
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    env.pop("HYDRA_FULL_ERROR", None)
    screen = on_a_terminal([sys.executable, "-m", "rnnexp.train", *TINY, "trainer.max_epochs=2"], env, 80, 300)
    drawn = [part for line in screen.split("\n") for part in line.split("\r")]  # each redraw of a line
    bars = [part for part in drawn if re.match(r"epoch \d/2 \|", part)]
    assert bars and all(len(bar) <= 80 for bar in bars), [bar for bar in bars if len(bar) > 80]
    # the epoch's bar after its validation holds the validation accuracy
    assert [bar for bar in bars if bar.startswith("epoch 1/2") and re.search(r"val/acc=[01]\.\d{4}\]$", bar)]
    # one kept line per epoch, counted from 1 as the bar, each after its validation; on its own line
    kept = re.findall(
        r"(?:^|\r)\[[^]]*\]\[rnnexp\]\[INFO\] - (epoch (\d)/2, step (\d+), .*val/acc [\d.]+, [\d.]+ s)\r?$",
        screen,
        re.M,
    )
    assert [(e, s) for _, e, s in kept] == [("1", "11"), ("2", "22")], screen
    # Lightning's line on a line of its own, not after the bar; the last bar is not drawn again after training
    assert re.search(r"(^|\n)\r*`Trainer.fit` stopped: `max_epochs=2` reached\.", screen), screen
    after = screen[screen.index(kept[-1][0]) :]
    assert not re.search(r"epoch \d/2 \|", after), after
    assert screen.count("not the published MNIST files") == 1
