"""Step-wise cells (rnnexp.models.recurrent, rnnexp.models.cells): the time loop, stacking,
bidirectionality and state handling proven against the fused nn.LSTM; each built-in cell learns and
resumes exactly; a user's cell from a file outside rnnexp trains and its settings are checked."""

import json
import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, cli, record, run_train
from omegaconf import OmegaConf
from torch import nn

from rnnexp.errors import ConfigError
from rnnexp.models import recurrent
from rnnexp.models.cells import CELLS, LSTMCell, PeepholeLSTMCell
from rnnexp.models.classifier import SequenceClassifier


def stepwise_twin(lstm: nn.LSTM) -> recurrent.Recurrent:
    """The step-wise LSTM layer holding `lstm`'s weights."""
    twin = recurrent.Recurrent(
        lambda size: LSTMCell(size, lstm.hidden_size, proj_size=lstm.proj_size),
        lstm.input_size,
        layers=lstm.num_layers,
        bidirectional=lstm.bidirectional,
    )
    with torch.no_grad():
        for layer in range(lstm.num_layers):
            for direction, suffix in enumerate(["", "_reverse"][: twin.directions]):
                cell = twin.cells[layer * twin.directions + direction]
                names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") + (("weight_hr",) if lstm.proj_size else ())
                for name in names:
                    getattr(cell, name).copy_(getattr(lstm, f"{name}_l{layer}{suffix}"))
    return twin


@pytest.mark.parametrize("proj_size", [0, 6])
def test_stepwise_lstm_equals_the_fused_one_on_the_same_weights(proj_size):
    torch.manual_seed(0)
    fused = nn.LSTM(28, 16, num_layers=2, bidirectional=True, batch_first=True, proj_size=proj_size)
    twin = stepwise_twin(fused)
    x = torch.rand(5, 28, 28)
    target = torch.randn(5, 28, 2 * (proj_size or 16))  # a loss that weighs every output differently

    ours, (theirs, (h_n, _)) = twin(x), fused(x)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    # what the classifier reads: each direction's last step, as the fused kernel's final states
    assert torch.allclose(twin.last(ours), torch.cat([h_n[-2], h_n[-1]], dim=-1), atol=1e-5, rtol=0)

    (ours * target).sum().backward()
    (theirs * target).sum().backward()
    for layer in range(2):
        for direction, suffix in enumerate(["", "_reverse"]):
            cell = twin.cells[2 * layer + direction]
            for name, p in cell.named_parameters():
                reference = getattr(fused, f"{name}_l{layer}{suffix}").grad
                assert torch.allclose(p.grad, reference, atol=1e-5, rtol=0), (layer, suffix, name)


def test_a_residual_layer_adds_its_input_to_its_output_above_the_first_layer():
    torch.manual_seed(0)
    layer = recurrent.Recurrent(lambda size: LSTMCell(size, 8), 28, layers=3, residual=True)
    x = torch.rand(4, 28, 28)
    first = recurrent.run(layer.cells[0], x)[0]  # 28 inputs, 8 outputs: no residual possible
    second = recurrent.run(layer.cells[1], first)[0] + first
    third = recurrent.run(layer.cells[2], second)[0] + second
    assert torch.allclose(layer(x), third)


def test_peephole_cell_is_tensorflows_lstm_cell():
    torch.manual_seed(0)
    cell = PeepholeLSTMCell(28, 16, cell_clip=0.5, proj_size=6)
    assert cell.forget_bias == 1.0 and cell.peephole.shape == (3, 16) and cell.output_size == 6
    assert torch.count_nonzero(cell.bias_ih) == 0 and torch.count_nonzero(cell.bias_hh) == 0  # TensorFlow: zeros
    bound = (6 / (28 + 6 + 4 * 16)) ** 0.5  # Glorot uniform over the joined kernel
    assert cell.weight_ih.abs().max() <= bound and cell.weight_hh.abs().max() <= bound
    assert cell.weight_ih.abs().max() > 0.9 * bound

    x = 5 * torch.randn(3, 28, 28)  # large inputs: the cell state would pass the clip
    xs, state = cell.inputs(x), cell.initial_state(3, x.device, x.dtype)
    for t in range(28):  # TensorFlow's LSTMCell, written out (gate order of the kernel aside)
        h, c = state
        i, f, g, o = (xs[:, t] + h @ cell.weight_hh.T).chunk(4, -1)
        c = torch.sigmoid(f + 1.0 + cell.peephole[1] * c) * c + torch.sigmoid(i + cell.peephole[0] * c) * torch.tanh(g)
        c = c.clamp(-0.5, 0.5)
        m = (torch.sigmoid(o + cell.peephole[2] * c) * torch.tanh(c)) @ cell.weight_hr.T
        out, state = cell(xs[:, t], state)
        assert torch.allclose(out, m, atol=1e-6) and torch.allclose(state[1], c, atol=1e-6)
    assert state[1].abs().max().item() == pytest.approx(0.5)  # clipped, and reached


@pytest.mark.parametrize("name", list(CELLS))
def test_every_builtin_cell_runs_stacked_bidirectional_with_dropout_and_residual(name):
    torch.manual_seed(0)
    model = SequenceClassifier(28, cell=name, hidden_size=8, layers=2, bidirectional=True, dropout=0.2, residual=True)
    assert all(isinstance(c, CELLS[name]) for c in model.core.cells) and len(model.core.cells) == 4
    x = torch.rand(3, 28, 28)
    model(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.equal(model.eval()(x), model(x))  # no dropout in evaluation


@pytest.mark.parametrize(
    "cell, args, message",
    [
        (
            "lstm_peephole",
            {"cell_clp": 3.0},
            "model.cell_args.cell_clp: not an argument of lstm_peephole; did you mean "
            "model.cell_args.cell_clip? its arguments: use_peepholes: bool = True, cell_clip: float | None = None,",
        ),
        ("lstm_peephole", {"proj_size": 2.5}, "model.cell_args.proj_size=2.5: must be an integer (lstm_peephole's"),
        ("lstm_peephole", {"cell_clip": "big"}, "model.cell_args.cell_clip=big: must be a number or null"),
        ("lstm_peephole", {"cell_clip": -1.0}, "model.cell_args.cell_clip=-1.0: must be a number > 0 or null"),
        ("indrnn", {"nonlinearity": "sigmoid"}, "model.cell_args.nonlinearity=sigmoid: must be one of relu, tanh"),
        ("cornn", {"hidden_size": 4}, "model.cell_args.hidden_size: rnnexp passes hidden_size itself"),
        ("lem", {"dt": 0}, "model.cell_args.dt=0: must be a number > 0"),
        ("nowhere.Cell", {}, "model.cell=nowhere.Cell: no module nowhere on the path"),
        ("torch.nn.Linear", {}, "model.cell=torch.nn.Linear: a cell defines initial_state"),
        ("rnnexp.models.cells.Nope", {}, "model.cell=rnnexp.models.cells.Nope: module rnnexp.models.cells has no Nope"),
    ],
)
def test_a_cell_and_its_settings_are_checked_before_anything_trains(cell, args, message):
    with pytest.raises(ConfigError) as err:
        SequenceClassifier(28, cell=cell, cell_args=args)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# --- each built-in cell learns and resumes, through the real run -----------------------------------------------------

# What each learns the tiny digits with in a few epochs of hidden 16 (test/acc at least the bar, chance 0.1). The
# tiny digits' signal is a row's brightness, which a layer norm of the input product removes: lnlstm reads them
# through an input projection, whose bias keeps it. coRNN's defaults are the paper's for 784 steps; rows are 28.
LEARNS = {
    "lstm_peephole": ([], 0.9),
    "lnlstm": (
        ["model.input_projection=32", "model.hidden_size=32", "optimizer.lr=0.005", "trainer.max_epochs=10"],
        0.5,
    ),
    "indrnn": (["model.layers=2", "model.hidden_size=32", "trainer.max_epochs=10"], 0.5),
    "cornn": (["+model.cell_args={dt: 0.5, gamma: 1.0, epsilon: 1.0}"], 0.9),
    "lem": ([], 0.7),
}


@pytest.mark.parametrize("name", list(LEARNS))
def test_each_builtin_cell_learns_the_tiny_digits(tmp_path, tiny_mnist, in_process, name):
    overrides, bar = LEARNS[name]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    in_process(*TINY, f"model={name}", "trainer.max_epochs=6", *overrides, f"data.root={tiny_mnist}", run_dir=run_dir)
    metrics = record(run_dir)
    assert metrics["status"] == "completed" and metrics["test/acc"] >= bar, metrics


def stop_at_step(n: int):
    """A task that is the real one, with SIGTERM sent to this process after its `n`th training step (as
    tests/kill_at.py does, in this process): the run stops after that step, saved."""
    from pytorch_lightning.callbacks import Callback

    import rnnexp.train

    class Stop(Callback):
        seen = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            Stop.seen += 1
            if Stop.seen == n:
                os.kill(os.getpid(), signal.SIGTERM)

    def task(cfg, job):
        build = rnnexp.train.build

        def build_with_stop(cfg, job=None):
            datamodule, module, trainer = build(cfg, job)
            trainer.callbacks.append(Stop())
            return datamodule, module, trainer

        rnnexp.train.build = build_with_stop
        try:
            return rnnexp.train.fit_and_test(cfg, job)
        finally:
            rnnexp.train.build = build

    return task


def best_weights(run_dir: Path) -> dict:
    best = run_dir / record(run_dir)["best_checkpoint"]
    return torch.load(best, weights_only=True)["state_dict"]


@pytest.mark.parametrize("name", list(LEARNS))
def test_a_stopped_run_of_each_builtin_cell_resumes_to_the_uninterrupted_runs_weights(
    tmp_path, tiny_mnist, in_process, name
):
    # two layers with dropout between them and residual connections, so that the RNG state and every path matter;
    # 3 optimizer steps a training step, 11 a 4-step epoch: stopped mid-epoch, after the 5th call
    run = [*TINY, f"model={name}", "model.layers=2", "model.dropout=0.2", "model.residual=true", "steps_per_call=3"]
    run += ["trainer.max_epochs=3", "callbacks.last.every_n_steps=3", f"data.root={tiny_mnist}"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir(), stopped.mkdir()
    in_process(*run, run_dir=whole)
    with pytest.raises(KeyboardInterrupt):  # rnnexp.run.Interrupted
        in_process(*run, run_dir=stopped, task=stop_at_step(5))
    assert record(stopped)["status"] == "interrupted" and 0 < record(stopped)["steps"] < record(whole)["steps"]
    in_process(f"resume={stopped}", run_dir=stopped)

    ours, theirs = record(stopped), record(whole)
    assert ours["status"] == "completed" and ours["attempts"] == 2
    for key in ("test/acc", "test/loss", "val/acc_best", "val/loss", "steps"):
        assert ours[key] == theirs[key], key
    ours, theirs = best_weights(stopped), best_weights(whole)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


# --- README, "Your own cell": exactly its cell, from a file outside rnnexp -------------------------------------------


def readme_cell() -> str:
    """The Python block of the README's section "Your own cell" that defines the cell."""
    section = (ROOT / "README.md").read_text().split("## Your own cell", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return next(b for b in blocks if "class MinimalGRU" in b)


@pytest.fixture
def user_cell(tmp_path, monkeypatch):
    """The README's my_cells.py in a folder of its own, on PYTHONPATH (for a subprocess) and sys.path."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_cells.py").write_text(textwrap.dedent(readme_cell()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("my_cells", None)


def test_the_readmes_own_cell_trains_restores_by_its_path_and_its_misspelled_setting_is_one_line(
    tmp_path, tiny_mnist, user_cell
):
    out = tmp_path / "out"
    result = run_train(*TINY, "model.cell=my_cells.MinimalGRU", "trainer.max_epochs=6", data=tiny_mnist, out=out)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (out / "runs").iterdir()
    metrics = record(run_dir)
    assert metrics["status"] == "completed" and metrics["test/acc"] >= 0.5, metrics  # chance: 0.1

    from rnnexp.checkpoint import restore

    config, model, _ = restore(run_dir)  # what evaluate and predict load: the saved config names the class
    assert config["model"]["cell"] == "my_cells.MinimalGRU" and type(model.core.cells[0]).__name__ == "MinimalGRU"

    bad = run_train(*TINY, "model.cell=my_cells.MinimalGRU", "+model.cell_args.gate_bais=2", data=tiny_mnist, out=out)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and len(lines) == 1, bad.stderr[-3000:]
    assert lines[0] == (
        "error: model.cell_args.gate_bais: not an argument of my_cells.MinimalGRU; did you mean "
        "model.cell_args.gate_bias? its arguments: gate_bias: float = 1.0"
    )


def test_a_users_cell_sweeps_against_the_built_ins_and_its_run_evaluates(tmp_path, tiny_mnist, user_cell):
    # The README's sweep: `-m model.cell=lstm,gru,my_cells.MinimalGRU`, the user's module found on the path.
    result = run_train(
        "-m", *TINY, "model.cell=lstm,my_cells.MinimalGRU", "trainer.max_epochs=1", data=tiny_mnist, out=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [record(job)["status"] for job in jobs] == ["completed", "completed"]
    assert [OmegaConf.load(job / "config.yaml").model.cell for job in jobs] == ["lstm", "my_cells.MinimalGRU"]
    evaluation = cli("rnnexp.evaluate", f"ckpt_path={jobs[1]}")
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    evaluated = json.loads((jobs[1] / "evaluation" / "evaluation.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(record(jobs[1])["test/acc"], abs=1e-6)  # the run's own test


def test_a_sweep_with_a_misspelled_argument_of_a_users_cell_starts_no_job(tmp_path, tiny_mnist, user_cell):
    sweep = ["-m", *TINY, "model.cell=lstm,my_cells.MinimalGRU", "+model.cell_args.gate_bais=2"]
    result = run_train(*sweep, data=tiny_mnist, out=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: 2 of 2 jobs cannot run, so none was started")  # lstm takes no cell_args
    assert "job 1 (model.cell=my_cells.MinimalGRU): model.cell_args.gate_bais: not an argument" in lines[0]
    assert "did you mean model.cell_args.gate_bias?" in lines[0]
    assert not (tmp_path / "multirun").exists()
