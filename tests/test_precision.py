"""trainer.precision=auto: bf16-mixed only where it measures faster on this device; a resumed run
keeps what it was trained in; the record says which."""

import json

import torch
from conftest import TINY, run_train

from rnnexp import precision
from rnnexp.models.classifier import SequenceClassifier


def batch():
    return torch.rand(8, 28, 28), torch.randint(0, 10, (8,))


def test_auto_takes_float32_where_the_device_has_no_bfloat16(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    chosen, why = precision.choose(SequenceClassifier(28), *batch())
    assert chosen == "32-true" and "no bfloat16" in why


def test_auto_takes_bf16_only_when_it_is_clearly_faster(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    for slow, fast, expected in [(10e-3, 5e-3, "bf16-mixed"), (10e-3, 9.5e-3, "32-true"), (1e-3, 1.2e-3, "32-true")]:
        monkeypatch.setattr(precision, "step_seconds", lambda m, x, y, bf16, a=slow, b=fast: b if bf16 else a)
        chosen, why = precision.choose(SequenceClassifier(28), *batch())
        assert chosen == expected and f"{slow / fast:.2f}x" in why


def test_measuring_leaves_the_model_and_the_random_stream_as_they_were(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    model = SequenceClassifier(28, hidden_size=8, layers=2, dropout=0.5)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch()
    torch.manual_seed(0)
    precision.choose(model, x, y)
    drawn = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.rand(3))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_a_run_records_the_precision_auto_chose_and_its_checkpoint_keeps_it(tmp_path, tiny_mnist):
    result = run_train(*TINY, "trainer.precision=auto", "trainer.max_epochs=1", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = next((tmp_path / "runs").iterdir())
    used = json.loads((run / "metrics.json").read_text())["environment"]["precision"]
    assert used in ("32-true", "bf16-mixed")
    assert f"precision: {used} (trainer.precision=auto" in (run / "train.log").read_text()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["precision"] == used


def test_a_resumed_auto_run_keeps_the_checkpoints_precision(tmp_path):
    from rnnexp.run import resume_point

    (tmp_path / "checkpoints").mkdir()
    loops = {"fit_loop": {"epoch_loop.state_dict": {"_batches_that_stepped": 7}}}
    torch.save({"state_dict": {}, "loops": loops, "precision": "bf16-mixed"}, tmp_path / "checkpoints" / "last.ckpt")
    _, purge_step, resumed = resume_point(tmp_path)  # the one read of the checkpoint before training
    cfg = {"precision": "auto", "accelerator": "cpu"}
    assert purge_step == 8
    assert precision.resolve(cfg, SequenceClassifier(28), datamodule=None, resumed=resumed) == "bf16-mixed"
    assert precision.resolve({**cfg, "precision": "32-true"}, None, None, resumed=resumed) == "32-true"


def test_device_processes_agree_on_what_auto_chose(monkeypatch):
    cfg = {"precision": "auto", "accelerator": "cpu"}
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP process the first one started, with its choice
    monkeypatch.setenv(precision.CHOSEN, "bf16-mixed")
    assert precision.resolve(cfg, SequenceClassifier(28), datamodule=None) == "bf16-mixed"
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_NTASKS", "4")  # processes Slurm started apart: no measurement, float32
    assert precision.resolve(cfg, SequenceClassifier(28), datamodule=None) == "32-true"
