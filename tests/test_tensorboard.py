"""What TensorBoard shows of a run: the settings in its HParams tab, its scalar tags and their order."""

import json

from conftest import CONF, TINY, run_train, scalars
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

import rnnexp.config  # noqa: F401  registers ${env_or:}, which the composed config's paths use
from rnnexp.tensorboard import hparams

# Every model setting (input_projection is null unless set, and left out), then the training's.
MODEL = {f"model/{k}" for k in "cell hidden_size layers bidirectional dropout nonlinearity forget_bias".split()}
MODEL |= {"model/init", "model/readout_init", "model/projection_init", "model/residual"}  # cell_args: none set
TRAINING = {"data/dataset", "data/view", "data/batch_size", "optimizer/name", "optimizer/lr", "optimizer/weight_decay"}
TRAINING |= {"scheduler/name", "trainer/precision", "trainer/max_epochs", "trainer/max_steps", "grad_clip", "seed"}
TRAINING |= {"data/shift", "label_smoothing"}


def resolved(tmp_path, *overrides: str) -> dict:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.run_dir={tmp_path}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_settings_are_the_model_and_its_training_without_paths_or_switches(tmp_path):
    settings = hparams(resolved(tmp_path))
    assert set(settings) == MODEL | TRAINING
    assert settings["optimizer/name"] == "Adam" and settings["scheduler/name"] == "OneCycleLR"
    assert settings["model/cell"] == "lstm" and settings["model/bidirectional"] is False

    preset = hparams(resolved(tmp_path, "experiment=simple_rnn_relu"), experiment="simple_rnn_relu")
    assert set(preset) == MODEL | (TRAINING - {"grad_clip"}) | {"optimizer/alpha", "optimizer/eps", "experiment"}
    assert (preset["optimizer/name"], preset["scheduler/name"]) == ("RMSprop", "none")
    assert preset["experiment"] == "simple_rnn_relu" and preset["model/nonlinearity"] == "relu"
    sgd = hparams(resolved(tmp_path, "optimizer=sgd", "model.input_projection=64"))
    assert sgd["optimizer/momentum"] == 0.9 and sgd["model/input_projection"] == 64
    permuted = hparams(resolved(tmp_path, "data=fashion_mnist", "data.view=permuted", "data.permutation_seed=7"))
    assert set(permuted) == MODEL | TRAINING | {"data/permutation_seed"}  # only the permuted view has one
    assert (permuted["data/dataset"], permuted["data/view"], permuted["data/permutation_seed"]) == (
        "fashion_mnist",
        "permuted",
        7,
    )


def test_run_writes_its_settings_for_hparams_and_only_curves_before_the_test_metrics(tmp_path, tiny_mnist):
    result = run_train(*TINY, "model=rnn", "trainer.max_epochs=2", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()

    events = EventAccumulator(str(run)).Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    # No experiment summary: TensorBoard then lists the settings of every run in view.
    assert set(content) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert set(start.hparams) == MODEL | TRAINING
    assert not any(k.startswith(("paths", "ckpt", "data/root", "data/download", "data/eval")) for k in start.hparams)
    assert start.hparams["model/cell"].string_value == "rnn" and start.hparams["model/hidden_size"].number_value == 16
    assert start.hparams["model/bidirectional"].HasField("bool_value") and start.group_name == ""
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS

    series = scalars(run)
    assert "epoch" not in series and not any(t.startswith(("hparams/", "test/")) for t in series), sorted(series)
    metrics = json.loads((run / "metrics.json").read_text())
    assert series["verdict/test_acc"][-1][1] == metrics["test/acc"] and "verdict/test_loss" in series
    # Time Series groups cards by the tag's first part, sorted by name, and opens the first two.
    assert sorted({t.split("/")[0] for t in series}) == ["train", "val", "verdict"]
