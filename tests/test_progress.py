"""Training progress: one kept line per epoch, and on a terminal TQDM's bar in between."""

import errno
import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from types import SimpleNamespace

from conftest import ROOT, TINY, terminal
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


def on_a_terminal(command: list[str], env: dict, columns: int, timeout: float, interrupt: str | None = None):
    """The exit code of `command` run on a terminal `columns` wide (a pseudo-terminal: tqdm draws its bar only on
    a terminal, sized by it) and what it wrote there, as written: carriage returns and escapes included. With
    `interrupt`, a pattern, the command gets a SIGINT (Ctrl-C) once what it wrote matches it."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**env, "COLUMNS": str(columns), "LINES": "24"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdin=child, stdout=child, stderr=child, preexec_fn=terminal())
    os.close(child)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([main], [], [], deadline - time.monotonic())[0]:
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError as err:  # EIO: the terminal's other end closed (the process ended)
                if err.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
            if interrupt and re.search(interrupt, out.decode(errors="replace")):
                proc.send_signal(signal.SIGINT)
                interrupt = None
        else:
            raise AssertionError(f"still running after {timeout} s: {out.decode(errors='replace')[-3000:]}")
        return proc.wait(timeout=30), out.decode()
    finally:
        proc.kill()
        proc.wait()
        os.close(main)


def screen(written: str) -> list[str]:
    """The lines a terminal shows once `written` was written to it (the scrollback too): a carriage return goes
    back to the line's start, a newline down a line, ESC[nA up n lines (tqdm's moves between its bars), other
    escapes change nothing here; text overwrites what is under it. Lines are not wrapped (the bars fit)."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[\d*[A-Za-z]|\r|\n|[^\x1b\r\n]+", written):
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            lines += [""] * (row + 1 - len(lines))
        elif token.startswith("\x1b["):
            row -= int(token[2:-1] or 1) if token.endswith("A") else 0
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return [line.rstrip() for line in lines]


def tiny_train(tiny_mnist, tmp_path, *overrides: str) -> tuple[list[str], dict]:
    env = {**os.environ, "RNNEXP_DATA_DIR": str(tiny_mnist), "RNNEXP_OUTPUT_DIR": str(tmp_path)}
    return [sys.executable, "-m", "rnnexp.train", *TINY, *overrides], env


KEPT = r"\[[^]]*\]\[rnnexp\]\[INFO\] - epoch (\d+)/(\d+), step (\d+), train/loss .*, val/acc [\d.]+, [\d.]+ s"


def test_on_an_80_column_terminal_each_epoch_leaves_its_line_and_the_bar_fits(tmp_path, tiny_mnist):
    code, written = on_a_terminal(*tiny_train(tiny_mnist, tmp_path, "trainer.max_epochs=2"), columns=80, timeout=300)
    assert code == 0, written[-3000:]
    drawn = [part for line in written.split("\n") for part in line.split("\r")]  # each drawing of a line
    bars = [part for part in drawn if re.match(r"epoch \d/2 \|", part)]
    assert bars and all(len(bar) <= 80 for bar in bars), [bar for bar in bars if len(bar) > 80]
    # the epoch's bar after its validation holds the validation accuracy
    assert [bar for bar in bars if bar.startswith("epoch 1/2") and re.search(r"val/acc=[01]\.\d{4}\]$", bar)]
    shown = screen(written)
    # one kept line per epoch, counted from 1 as the bar, each after its validation, each a line of its own
    assert [m.groups() for line in shown if (m := re.fullmatch(KEPT, line))] == [("1", "2", "11"), ("2", "2", "22")]
    # no bar left on the screen (the kept lines say what it said), none glued to Lightning's line
    assert not [line for line in shown if re.search(r"epoch \d/2 \|", line)], shown
    assert "`Trainer.fit` stopped: `max_epochs=2` reached." in shown, shown
    assert written.count("not the published MNIST files") == 1


def test_a_line_logged_while_the_bar_is_drawn_starts_a_line_of_its_own(tmp_path, tiny_mnist):
    # Ctrl-C while the second epoch's bar is drawn: the run says it stops, then stops
    command, env = tiny_train(tiny_mnist, tmp_path, "trainer.max_epochs=200")
    code, written = on_a_terminal(command, env, columns=80, timeout=300, interrupt=r"epoch 2/200 \|[^\r\n]*\d+/11")
    assert code == 130, written[-3000:]
    shown = screen(written)
    assert [line for line in shown if re.fullmatch(r"\[[^]]*\]\[rnnexp\]\[WARNING\] - SIGINT: stopping after .*", line)]
    assert not [line for line in shown if re.search(r"epoch \d+/200 \|", line)], shown
