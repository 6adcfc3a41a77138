"""What a run prints around its training: its own few lines, not Lightning's chatter, and the next commands."""

import logging
import re
import warnings

from conftest import TINY, only, run_train


class Kept(logging.Handler):
    """The records a logger lets through its own filters."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_run_says_what_it_decided_and_what_to_run_next_without_lightnings_chatter(tmp_path, tiny_mnist):
    # Lightning's own handler writes to the stderr of when it was imported, not to what run_train captures: its
    # lines are looked for where they are emitted, as are warnings (pytest records them rather than print them)
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    kept = Kept()
    lightning.addHandler(kept)
    try:
        with warnings.catch_warnings(record=True) as caught:
            result = run_train(*TINY, "trainer.max_epochs=2", data=tiny_mnist, out=tmp_path)
    finally:
        lightning.removeHandler(kept)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only((tmp_path / "runs").iterdir())
    assert any(line.startswith("`Trainer.fit` stopped") for line in kept.lines)  # the logger's other lines pass
    assert not [line for line in kept.lines if re.match(r"GPU available|TPU available|💡 Tip", line)]
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "srun" in m or "LeafSpec" in m or "smaller than the logging interval" in m]
    console = result.stdout + result.stderr
    assert "| Name" not in console and "Total params" not in console  # Lightning's model summary table
    assert re.search(r"data: mnist \(.*\): 350 train, 50 val, 100 test; rows, 28 steps of 28; batches of 32", console)
    assert re.search(r"model: lstm 1 x 16, 3,114 parameters", console)
    assert "precision: 32-true (trainer.precision)" in console
    assert f"run folder: {run_dir}" in console
    # the generated files' warning, said once by the run (not again by each validation's sample images)
    warning = "not the published MNIST files"
    assert console.count(warning) == 1 and (run_dir / "train.log").read_text().count(warning) == 1
    tail = console[console.index("test/acc=") :]  # the last lines: where the run is, what to run next
    assert f"tensorboard --logdir {run_dir}" in tail and f"python -m rnnexp.evaluate ckpt_path={run_dir}" in tail
