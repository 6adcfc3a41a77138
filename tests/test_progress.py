"""Training progress: TQDM's bar on a terminal, one plain line per epoch in a log file."""

import io
import os
import re
import subprocess
import sys

from conftest import ROOT, TINY
from pytorch_lightning.callbacks import TQDMProgressBar

from rnnexp.progress import EpochLines, progress_bar


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
