"""The adapters in rnnexp/compat/, one per library, are the only places that touch a library's private
attributes; each is exercised here against the installed version, and a failure names the adapter to
update."""

import contextlib
import re
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import process_state_restored
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from pytorch_lightning.demos.boring_classes import BoringModel
from torch.utils.tensorboard import SummaryWriter

from rnnexp.compat import hydra as hydra_compat
from rnnexp.compat import lightning, tensorboard

ROOT = Path(__file__).parents[1]


@contextlib.contextmanager
def adapter(module):
    """A failure inside says which adapter no longer fits the installed library."""
    try:
        yield
    except (AttributeError, KeyError, TypeError, AssertionError) as err:
        path = Path(module.__file__).relative_to(ROOT)
        pytest.fail(f"{path} (written for {module.VERSION}) no longer fits the installed library: {err!r}; update it")


class Probe(pl.Callback):
    """Reads every Lightning adapter during a real fit."""

    def __init__(self):
        self.last_batches, self.progress = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last_batches.append(lightning.is_last_batch(trainer))
        self.progress.append(lightning.optimizer_step_progress(trainer))
        lightning.set_steps_logged_at(trainer, trainer.global_step - 1)


def test_the_lightning_adapter_fits_the_installed_lightning(tmp_path):
    module = BoringModel()
    assert lightning.trainer_of(module) is None  # not attached: None, not the public property's error
    probe = Probe()
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1, callbacks=[probe], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)  # fmt: skip
    with adapter(lightning):
        lightning.keep_own_signal_handlers(trainer)
        trainer.fit(module)
        assert lightning.trainer_of(module) is trainer
        assert probe.last_batches == [False, False, True] * 2
        progress = probe.progress[-1]  # what an optimizer step outside Lightning's wrapper advances
        before = progress.total.completed
        progress.increment_ready(), progress.increment_completed()
        assert progress.total.completed == before + 1
        trainer.save_checkpoint(tmp_path / "last.ckpt")
        saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
        assert lightning.steps_logged_at(saved) == trainer.fit_loop.epoch_loop._batches_that_stepped


def test_the_lightning_adapter_knows_lightnings_precisions_its_errors_and_its_hook_attribute(tmp_path):
    from rnnexp.settings import PRECISIONS

    with adapter(lightning):
        values = lightning.precision_values()
        assert sorted(map(repr, PRECISIONS)) == sorted(map(repr, [*values, "auto"]))  # repr: 32 and "32" both
        with pytest.raises(ValueError) as refused:
            pl.Trainer(precision="no-such-precision", logger=False)
        assert lightning.raised_by_lightning(refused.value)
        with pytest.raises(ValueError) as ours:
            int("not a number")
        assert not lightning.raised_by_lightning(ours.value)

        class Module(lightning.PlainHookAttributes, BoringModel):
            pass

        module = Module()
        quiet = {"enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}
        trainer = pl.Trainer(max_steps=1, limit_val_batches=0, logger=False, default_root_dir=tmp_path, **quiet)
        trainer.fit(module)
        assert "_current_fx_name" in module.__dict__  # what the fast path is for: Lightning still sets it so
        module.anything = 3
        assert module.anything == 3 and isinstance(module.layer, torch.nn.Module)


def test_the_hydra_adapter_fits_the_installed_hydra():
    with adapter(hydra_compat):
        parsed = OverridesParser.create().parse_overrides(["a=1,2", "b=3"])
        assert sorted(hydra_compat.grid_jobs(parsed)) == [["a=1", "b=3"], ["a=2", "b=3"]]
        ret = JobReturn(status=JobStatus.FAILED)
        ret.return_value = error = RuntimeError("boom")  # the public setter, as hydra's run_job sets it
        assert hydra_compat.failed_job_error(ret) is error
        state = hydra_compat.global_state()  # what a Slurm job restores before composing its config
        from hydra.core.config_store import ConfigStore

        assert ConfigStore in state["instances"] and "oc.env" in state["omegaconf_resolvers"], sorted(state)
    with pytest.raises(RuntimeError, match="boom"):
        ret.return_value  # noqa: B018  (the public property re-raises it, which failed_job_error avoids)


def test_the_hydra_adapter_runs_a_task_on_the_arguments_it_is_given(tmp_path, capsys):
    seen = []
    argv_before = list(sys.argv)
    with adapter(hydra_compat), process_state_restored():  # Hydra's job logging left on root: taken off again
        hydra_compat.run_hydra(seen.append, ROOT / "conf", "train", ["model=gru", f"hydra.run.dir={tmp_path}"])
        assert [cfg.model.cell for cfg in seen] == ["gru"]  # the arguments given, not this process's sys.argv
        hydra_compat.run_hydra(seen.append, ROOT / "conf", "train", ["--cfg", "job", "model=rnn"])
        assert "cell: rnn" in capsys.readouterr().out and len(seen) == 1  # Hydra's own flags work; no job ran
    assert sys.argv == argv_before


def test_the_tensorboard_adapter_fits_the_installed_torch(tmp_path):
    writer = SummaryWriter(tmp_path)
    with adapter(tensorboard):
        assert callable(tensorboard.file_writer(writer).add_summary)
    writer.close()


# What each library keeps private and rnnexp reads: allowed under rnnexp/compat/ only.
PRIVATE = re.compile(
    r"\._(batches_that_stepped|signal_connector|get_file_writer|return_value|trainer|storage|study_id)\b"
    r"|\"_(batches_that_stepped|return_value)\"|hydra\._internal|hydra_optuna_sweeper|optim_step_progress"
    r"|batch_progress|\[\"loops\"\]|_is_mkldnn|_current_fx_name|_PRECISION_INPUT|\._pytree|co_filename"
    r"|callbacks\.progress\.tqdm_progress|plugins\.io\.torch_io|model_helpers"  # modules Lightning does not export
    r"|(from|import) lightning_fabric\b"  # Lightning's inner package: pytorch_lightning exports what rnnexp uses
    r"|hydra\.core\.singleton|Singleton\.get_state"  # Hydra's process-wide state
)


def test_private_attributes_of_libraries_are_read_in_the_adapters_only():
    sources = [*(ROOT / "rnnexp").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
    found = {
        f"{p.relative_to(ROOT)}:{n}": line.strip()
        for p in sources
        if "compat" not in p.parts
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if PRIVATE.search(line.split("#", 1)[0])
    }
    assert found == {}, "move these into rnnexp/compat/<library>.py"


# sys.argv or os.environ written: an assignment, an augmented one, or a mutating method
WRITES = re.compile(
    r"(sys\.argv|os\.environ)(\[[^\]]*\])?\s*(=[^=]|\+=)|os\.environ\.(pop|update|setdefault|clear)\(|os\.putenv"
)


def test_nothing_under_rnnexp_rewrites_the_command_line_or_the_environment():
    # One exception, before any job: Hydra is told to let its errors through (HYDRA_FULL_ERROR) as the
    # process starts, so that rnnexp.run.main can say them in one line.
    found = {
        f"{p.relative_to(ROOT)}:{n}": line.strip()
        for p in [*(ROOT / "rnnexp").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if WRITES.search(line.split("#", 1)[0])
    }
    assert list(found.values()) == ['os.environ.setdefault("HYDRA_FULL_ERROR", "1")'], found
