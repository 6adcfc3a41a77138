"""trainer.precision=auto: a rule of the device's bfloat16 hardware, the model's shape and the batch
size, never a timing; a resumed run keeps what it was trained in; the record says which and why."""

import json
import logging
import os
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import CONF, TINY
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

import rnnexp.config  # noqa: F401  registers ${env_or:}, which the composed config's paths use
from rnnexp import precision
from rnnexp.models.classifier import SequenceClassifier
from rnnexp.precision import Shape, decide
from rnnexp.tensorboard import HPARAMS_RUN

AUTO = {"precision": "auto", "accelerator": "cpu"}


def shape(cell="lstm", hidden=128, batch=128, layers=1, bidirectional=False, inputs=28) -> Shape:
    return Shape(cell, hidden, layers, bidirectional, inputs, batch)


def test_the_decision_reads_no_clock_and_gives_the_same_answer_every_time(monkeypatch):
    model, datamodule = SequenceClassifier(28), SimpleNamespace(batch_size=128)

    def clock():
        raise AssertionError("trainer.precision=auto read a clock")

    for name in ("perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "process_time", "thread_time"):
        monkeypatch.setattr(time, name, clock)
    for hardware, expected in [(True, "bf16-mixed"), (False, "32-true")]:
        monkeypatch.setattr(precision, "bf16_hardware", lambda device, h=hardware: h)
        assert {precision.resolve(AUTO, model, datamodule) for _ in range(5)} == {expected}
    assert len({decide("cpu", True, shape(batch=b)) for b in (128, 128, 128)}) == 1


def test_float32_without_bfloat16_hardware_whatever_the_model():
    for device in ("cpu", "cuda", "mps"):
        chosen, why = decide(device, False, shape(hidden=1024, batch=1024, layers=3))
        assert chosen == "32-true" and why == f"no bfloat16 arithmetic on {device}"


def test_on_bfloat16_hardware_a_large_model_trains_in_bf16_and_a_small_one_in_float32():
    # The measured points behind MIN_WORK["cpu"] (precision.py): LSTM-128 at batch 128 gained, LSTM-32 at 32 lost.
    chosen, why = decide("cpu", True, shape(hidden=128, batch=128))
    assert chosen == "bf16-mixed" and why.startswith("LSTM-128, 28 inputs, batch 128 on cpu: 10.22M multiply-adds")
    chosen, why = decide("cpu", True, shape(hidden=32, batch=32))
    least = precision.MIN_WORK["cpu"] / 1e6
    assert chosen == "32-true" and f"0.25M multiply-adds per sequence step < {least:.2f}M" in why
    # A GPU's gain is not measured yet: float32 there, and the reason says how to measure it.
    chosen, why = decide("cuda", True, shape(hidden=128, batch=128))
    assert chosen == "32-true" and "benchmarks/precision_rule.py" in why


def test_more_work_never_turns_bf16_back_to_float32():
    sizes = (8, 32, 64, 128, 256, 512)
    for cell in ("rnn", "gru", "lstm"):
        for layers, bidirectional, inputs in [(1, False, 28), (2, True, 28), (1, False, 1)]:
            chosen = [
                [decide("cpu", True, shape(cell, h, b, layers, bidirectional, inputs))[0] for b in sizes] for h in sizes
            ]
            bf16 = [[c == "bf16-mixed" for c in row] for row in chosen]
            assert all(row == sorted(row) for row in bf16), (cell, layers, bf16)  # along the batch: False, then True
            assert all(list(col) == sorted(col) for col in zip(*bf16)), (cell, layers, bf16)  # along hidden_size
    assert shape("rnn").work() < shape("gru").work() < shape("lstm").work()  # gates per cell: 1, 3, 4


def test_the_shape_is_read_from_the_models_recurrent_core():
    model = SequenceClassifier(1, cell="gru", hidden_size=64, layers=2, bidirectional=True, input_projection=16)
    assert Shape.of(model, 32) == Shape("gru", 64, 2, True, 16, 32)  # the core reads the projection's 16
    assert Shape.of(torch.nn.Linear(28, 10), 32) is None
    stepwise = SequenceClassifier(28, cell="lem", hidden_size=16)
    assert Shape.of(stepwise, 32) is None
    chosen, why = decide("cpu", True, Shape.of(stepwise, 32))  # a CPU with bf16 arithmetic: the rule has no measure
    assert chosen == "32-true" and why.startswith("a step-wise cell") and "trainer.precision" in why


@pytest.mark.parametrize(
    "cpuinfo, expected",
    [
        ("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\nbugs\t\t: spectre_v1\n", True),
        ("flags\t\t: fpu avx2 amx_bf16 amx_tile\n", True),
        ("flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\nvmx flags\t: avx512_bf16\n", False),  # AVX-512: emulated
        (None, False),  # no /proc/cpuinfo (macOS, Windows): float32
    ],
)
def test_cpu_bfloat16_hardware_is_read_from_the_cpu_flags(tmp_path, monkeypatch, cpuinfo, expected):
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    monkeypatch.setattr(precision, "CPUINFO", path)
    assert precision.bf16_hardware("cpu") is expected
    assert precision.bf16_hardware("mps") is False  # no rule measured for it


def test_every_job_of_a_sweep_over_the_cells_trains_in_the_same_precision(tmp_path, monkeypatch):
    """`python -m rnnexp.train -m model=rnn,lstm,gru`: what build() hands resolve() for each job."""
    jobs = []
    for cell in ("rnn", "lstm", "gru"):
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=[f"model={cell}", f"paths.run_dir={tmp_path}"])
        datamodule = instantiate(cfg.data, seed=cfg.seed, steps_per_call=cfg.steps_per_call)  # reads no file
        model = instantiate(cfg.model, input_size=datamodule.input_size, num_classes=datamodule.num_classes)
        jobs.append((cfg.trainer, model, datamodule))
    for hardware in (True, False):
        monkeypatch.setattr(precision, "bf16_hardware", lambda device, h=hardware: h)
        chosen = [precision.resolve(*job) for job in jobs]
        assert chosen == ["bf16-mixed" if hardware else "32-true"] * 3, chosen


def test_each_process_of_a_several_device_run_decides_alike_and_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setattr(precision, "bf16_hardware", lambda device: True)
    model, datamodule = SequenceClassifier(28), SimpleNamespace(batch_size=128)
    for started in [{}, {"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, {"SLURM_NTASKS": "4", "SLURM_PROCID": "3"}]:
        for key, value in started.items():
            monkeypatch.setenv(key, value)
        environ = dict(os.environ)
        assert precision.resolve(AUTO, model, datamodule) == "bf16-mixed", started
        assert dict(os.environ) == environ


def test_a_run_records_the_precision_auto_chose_and_why(tmp_path, tiny_mnist, in_process, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="rnnexp")  # as Hydra's job logging sets it: info lines reach train.log
    monkeypatch.setattr(precision, "bf16_hardware", lambda device: True)
    monkeypatch.setitem(precision.MIN_WORK, "cpu", 1)  # even TINY's GRU-16 at batch 32: bf16, not the default
    monkeypatch.setenv("RNNEXP_DATA_DIR", str(tiny_mnist))
    # GRU: oneDNN has no bfloat16 LSTM on a CPU without AVX-512, which this test must also run on
    in_process(*TINY, "model=gru", "trainer.precision=auto", "trainer.max_epochs=1", run_dir=tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["environment"]["precision"] == "bf16-mixed"
    log = (tmp_path / "train.log").read_text()
    assert "precision: bf16-mixed (trainer.precision=auto: GRU-16, 28 inputs, batch 32 on cpu: " in log
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["precision"] == "bf16-mixed"
    content = EventAccumulator(str(tmp_path / HPARAMS_RUN)).Reload().PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["trainer/precision"].string_value == "bf16-mixed"  # the HParams tab: what auto chose


def test_a_resumed_auto_run_keeps_the_checkpoints_precision(tmp_path, monkeypatch):
    from rnnexp.run import resume_point

    monkeypatch.setattr(precision, "bf16_hardware", lambda device: False)  # the rule would say 32-true now
    (tmp_path / "checkpoints").mkdir()
    loops = {"fit_loop": {"epoch_loop.state_dict": {"_batches_that_stepped": 7}}}
    torch.save({"state_dict": {}, "loops": loops, "precision": "bf16-mixed"}, tmp_path / "checkpoints" / "last.ckpt")
    _, purge_step, resumed = resume_point(tmp_path, OmegaConf.create({}))  # the one read before training
    assert purge_step == 8
    gru = SequenceClassifier(28, cell="gru")
    assert precision.resolve(AUTO, gru, datamodule=None, resumed=resumed) == "bf16-mixed"
    assert precision.resolve({**AUTO, "precision": "32-true"}, None, None, resumed=resumed) == "32-true"


def test_bfloat16_for_an_lstm_on_a_cpu_without_bfloat16_arithmetic_is_one_line(monkeypatch):
    """oneDNN has no bfloat16 LSTM there: the run would die in its first step with a traceback."""
    from rnnexp.errors import ConfigError, ResourceError

    monkeypatch.setattr(precision, "bf16_hardware", lambda device: False)
    lstm, gru = SequenceClassifier(28), SequenceClassifier(28, cell="gru")
    with pytest.raises(ConfigError, match=r"^trainer.precision=bf16-mixed, but this CPU has no bfloat16 arithmetic"):
        precision.resolve({**AUTO, "precision": "bf16-mixed"}, lstm, None)
    with pytest.raises(ResourceError, match=r"the run being resumed trained in bf16-mixed, .*; continue it on a CPU"):
        precision.resolve(AUTO, lstm, None, resumed="bf16-mixed")
    assert precision.resolve({**AUTO, "precision": "bf16-mixed"}, gru, None) == "bf16-mixed"  # emulated: it runs
    monkeypatch.setattr(precision, "bf16_hardware", lambda device: True)
    assert precision.resolve({**AUTO, "precision": "bf16-mixed"}, lstm, None) == "bf16-mixed"
