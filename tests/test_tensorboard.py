"""What TensorBoard shows of a run: the settings in its HParams tab, its scalar tags and their order."""

import json
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CONF, TINY, run_train, scalars
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger as LightningTensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

import rnnexp.config  # noqa: F401  registers ${env_or:}, which the composed config's paths use
from rnnexp.data.datamodule import SequenceDataModule
from rnnexp.tensorboard import HPARAMS_RUN, PredictionSamples, TensorBoardLogger, hparams, log_hparams, tag

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


def hparams_tab(logdir: Path) -> tuple[list[str], dict[str, dict[str, float]]]:
    """What TensorBoard's HParams tab lists for `logdir`, computed by TensorBoard's own backend: the
    metric columns in their order (the page ticks the first five), and each session's metric values."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    backend, request = backend_context.Context(tb), context.RequestContext()
    metadata_ = backend.hparams_metadata(request, "")
    experiment = backend.experiment_from_metadata(
        request, "", True, metadata_, backend.hparams_from_data_provider(request, "", limit=None)
    )
    columns = [m.name.tag for m in experiment.metric_infos]
    groups = api_pb2.ListSessionGroupsRequest(allowed_statuses=[api_pb2.STATUS_SUCCESS], start_index=0, slice_size=100)
    sessions = list_session_groups.Handler(request, backend, "", groups).run().session_groups
    return columns, {g.name: {m.name.tag: m.value for m in g.metric_values} for g in sessions}


def test_run_writes_its_settings_for_hparams_and_only_curves_before_the_test_metrics(tmp_path, tiny_mnist):
    result = run_train(*TINY, "model=rnn", "trainer.max_epochs=2", data=tiny_mnist, out=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())

    # The HParams tab's metrics are those a comparison needs, all four ticked (it ticks the first five),
    # at the run's final values; not the training curves nor the learning rate.
    columns, sessions = hparams_tab(tmp_path / "runs")
    assert columns == ["val/acc", "val/acc_best", "val/loss", "verdict/test_acc"]
    (values,) = sessions.values()
    assert values == pytest.approx({tag(k): metrics[k] for k in ("val/acc", "val/acc_best", "val/loss", "test/acc")})

    events = EventAccumulator(str(run / HPARAMS_RUN)).Reload()
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

    series = scalars(run)  # the curves, in the run's own folder
    assert "val/samples" in EventAccumulator(str(run)).Reload().Tags()["images"]
    assert "epoch" not in series and not any(t.startswith(("hparams/", "test/")) for t in series), sorted(series)
    metrics = json.loads((run / "metrics.json").read_text())
    assert series["verdict/test_acc"][-1][1] == metrics["test/acc"] and "verdict/test_loss" in series
    # Time Series groups cards by the tag's first part, sorted by name, and opens the first two.
    assert sorted({t.split("/")[0] for t in series}) == ["train", "val", "verdict"]


class Guesses(torch.nn.Module):
    """A model whose guesses are given: the next ones of `answers` for each image it is shown (the
    callback scans the validation split in its order)."""

    def __init__(self, answers: torch.Tensor):
        super().__init__()
        self.answers, self.seen = answers, 0

    def forward(self, x):
        guesses = self.answers[self.seen : self.seen + len(x)]
        self.seen += len(x)
        return torch.nn.functional.one_hot(guesses, 10).float()


class Figures(LightningTensorBoardLogger):
    """A TensorBoard logger that keeps the figures it is given."""

    figures: dict = {}

    @property
    def experiment(self):
        return self

    def add_figure(self, tag, figure, global_step=None):
        self.figures[tag] = figure


@pytest.mark.parametrize("wrong", [[3, 20, 41], "all but zeros"])
def test_samples_show_the_images_the_model_gets_wrong_with_true_and_guessed_class(tmp_path, tiny_mnist, wrong,
                                                                                 monkeypatch):  # fmt: skip
    datamodule = SequenceDataModule(root=str(tiny_mnist), val_size=50, download=False)
    datamodule.setup()
    labels = datamodule.splits["val"][1]
    if wrong == "all but zeros":  # the model says 0 to everything: most are wrong, the first 16 of those shown
        answers = torch.zeros_like(labels)
        wrong = [k for k in range(len(labels)) if labels[k] != 0][:16]
        expected = wrong
    else:  # three wrong: shown first, then the first right ones fill the 16
        answers = labels.clone()
        answers[wrong] = (labels[wrong] + 1) % 10
        expected = wrong + [k for k in range(len(labels)) if k not in wrong][:13]
    monkeypatch.setattr(PredictionSamples, "CHUNK", 8)  # scanned in chunks, as far as it takes
    model = Guesses(answers)
    logger = Figures(save_dir=tmp_path)
    trainer = SimpleNamespace(datamodule=datamodule, sanity_checking=False, logger=logger, is_global_zero=True,
                              global_step=5)  # fmt: skip
    PredictionSamples(count=16).on_validation_epoch_end(
        trainer, SimpleNamespace(model=model, device=torch.device("cpu"))
    )

    (ax,) = logger.figures["val/samples"].axes  # one axes: 16 images, each under its two lines
    assert len(ax.images) == len(ax.texts) == 16
    images = datamodule.images("val")
    classes = datamodule.classes
    for image, text, k in zip(ax.images, ax.texts, expected, strict=True):  # true class, then the guess
        assert (image.get_array() == images[k].numpy()).all()
        assert text.get_text() == f"{classes[labels[k]]}\n-> {classes[answers[k]]}"
        assert (text.get_color() == "red") == (k in wrong)
        left, _, _, top = image.get_extent()  # y grows downwards, as in an image
        assert text.get_position() == (left + 14, top - 1)  # centred above its image
    if len(wrong) == 16:
        assert model.seen < len(labels)  # it stopped scanning once 16 wrong ones were found


@pytest.mark.parametrize("folder", ["", HPARAMS_RUN])  # the run's curves, and its HParams session below it
def test_an_attempt_resuming_within_the_second_of_the_last_writes_files_read_after_its(tmp_path, folder):
    """TensorBoard reads a run folder's event files in name order, and a name starts with the second the file was
    made in: an earlier attempt's file of the second just begun (here, of the next: its clock a little ahead),
    made by another process, must still be read before the resumed attempt's."""
    earlier = tmp_path / folder / f"events.out.tfevents.{int(time.time()) + 1}.{socket.gethostname()}.99999999.0"
    earlier.parent.mkdir(exist_ok=True)
    earlier.touch()
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="", version="")
    logger.log_metrics({"train/loss": 1.0}, step=7)
    log_hparams(logger, {"model/cell": "lstm"}, {"val/acc_best": 0.5}, step=7)
    logger.finalize("success")
    made = [p for p in (tmp_path / folder).glob("events.out.tfevents.*") if p != earlier]
    assert made and sorted([earlier, *made])[0] == earlier, sorted(p.name for p in [earlier, *made])
