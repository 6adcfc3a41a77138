import json

import numpy as np
import pytest
import torch
from conftest import TINY, run_train
from omegaconf import OmegaConf

from rnnexp.data.datamodule import VIEWS, InMemoryBatches, SequenceDataModule, permutation
from rnnexp.data.datasets import MNIST
from rnnexp.data.idx import load
from rnnexp.train import build

# The first pixels of data.permutation_seed=0's order. Runs keep only the seed: were this to change (another
# generator, a changed stream), their permuted test sets would no longer be rebuilt.
PERMUTATION_0_STARTS = [693, 85, 647, 392, 765, 14, 299, 711]


def test_each_epoch_visits_every_sample_once_in_a_new_order():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1).expand(10, 2, 3).contiguous()
    batches = InMemoryBatches(x, torch.arange(10), batch_size=4, shuffle=True)
    assert len(batches) == 3
    epochs = [torch.cat([y for _, y in batches]) for _ in range(2)]
    assert all(sorted(e.tolist()) == list(range(10)) for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])
    for xb, yb in batches:  # images and labels stay paired; bytes become floats in [0, 1]
        assert xb.dtype == torch.float32 and torch.allclose(xb[:, 0, 0] * 255, yb.float())


def test_evaluation_batches_keep_the_file_order():
    batches = InMemoryBatches(torch.zeros(5, 1, 1, dtype=torch.uint8), torch.arange(5), batch_size=2, shuffle=False)
    assert [y.tolist() for _, y in batches] == [[0, 1], [2, 3], [4]]


def test_validation_is_the_first_training_images_and_test_is_the_test_file(tiny_mnist):
    dm = SequenceDataModule(root=str(tiny_mnist), val_size=50, download=False)
    dm.setup()
    arrays = load(tiny_mnist, MNIST, download_missing=False)
    val_x, val_y = dm.splits["val"]
    assert np.array_equal(val_x.numpy(), arrays["train_images"][:50]) and len(dm.splits["train"][1]) == 350
    assert np.array_equal(dm.splits["test"][1].numpy(), arrays["test_labels"])


def test_columns_view_reads_the_image_left_to_right(tiny_mnist):
    rows = SequenceDataModule(root=str(tiny_mnist), val_size=50, download=False)
    cols = SequenceDataModule(root=str(tiny_mnist), val_size=50, view="columns", download=False)
    rows.setup()
    cols.setup()
    assert torch.equal(cols.splits["test"][0], rows.splits["test"][0].transpose(1, 2))


def test_validation_size_must_leave_training_images(tiny_mnist):
    with pytest.raises(ValueError, match="data.val_size=400: must be between 1 and 399"):
        SequenceDataModule(root=str(tiny_mnist), val_size=400, download=False).setup()


def _views(root, **kwargs) -> dict[str, SequenceDataModule]:
    modules = {
        view: SequenceDataModule(root=str(root), val_size=50, view=view, download=False, **kwargs) for view in VIEWS
    }
    for module in modules.values():
        module.setup()
    return modules


def test_each_view_has_its_shape_and_input_size(tiny_mnist):
    shapes = {view: (dm.splits["test"][0].shape, dm.input_size) for view, dm in _views(tiny_mnist).items()}
    assert shapes == {
        "rows": ((100, 28, 28), 28),
        "columns": ((100, 28, 28), 28),
        "pixels": ((100, 784, 1), 1),
        "permuted": ((100, 784, 1), 1),
    }
    x, _ = next(iter(_views(tiny_mnist)["permuted"].train_dataloader()))
    assert x.shape == (128, 784, 1) and x.dtype == torch.float32


def test_every_view_rearranges_the_same_pixels(tiny_mnist):
    views = _views(tiny_mnist, permutation_seed=3)
    rows = views["rows"].splits["train"][0]
    for view, dm in views.items():  # the same multiset of pixels in each image, and the labels unchanged
        x, y = dm.splits["train"]
        assert torch.equal(x.flatten(1).sort(dim=1).values, rows.flatten(1).sort(dim=1).values), view
        assert torch.equal(y, views["rows"].splits["train"][1])
    pixels = views["pixels"].splits["train"][0]
    assert torch.equal(pixels.squeeze(-1), rows.flatten(1))  # row after row, left to right
    order = permutation(3)
    assert sorted(order.tolist()) == list(range(784)) and not torch.equal(order, torch.arange(784))
    assert torch.equal(views["permuted"].splits["train"][0], pixels[:, order])
    assert torch.equal(views["permuted"].splits["test"][0], views["pixels"].splits["test"][0][:, order])


def test_the_permutation_is_fixed_by_its_own_seed(tiny_mnist):
    def permuted(**kwargs) -> torch.Tensor:
        dm = SequenceDataModule(root=str(tiny_mnist), val_size=50, view="permuted", download=False, **kwargs)
        dm.setup()
        return dm.splits["train"][0]

    assert torch.equal(permuted(permutation_seed=3), permuted(permutation_seed=3, seed=99))  # not the run's seed
    assert not torch.equal(permuted(permutation_seed=3), permuted(permutation_seed=4))
    # NumPy's RandomState stream does not change between versions: these are the first pixels for seed 0, always
    assert permutation(0)[:8].tolist() == PERMUTATION_0_STARTS


def test_a_runs_permutation_is_rebuilt_from_its_config_and_its_checkpoint(tmp_path, tiny_mnist):
    result = run_train(
        *TINY, "data.view=permuted", "data.permutation_seed=7", "trainer.max_steps=2", data=tiny_mnist, out=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    saved = OmegaConf.load(run / "config.yaml")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved.data.permutation_seed == checkpoint["config"]["data"]["permutation_seed"] == 7
    metrics = json.loads((run / "metrics.json").read_text())
    test_loss, best = metrics["test/loss"], metrics["best_checkpoint"]

    def evaluated(cfg) -> float:  # the run's best weights (ckpt_path) on the test split a config rebuilds
        cfg.ckpt_path, cfg.logger, cfg.callbacks, cfg.trainer.enable_progress_bar = best, None, None, False
        datamodule, module, trainer = build(cfg)
        trainer.test(module, datamodule=datamodule, verbose=False)
        return float(trainer.callback_metrics["test/loss"])

    rebuilt = evaluated(OmegaConf.create(checkpoint["config"]))
    saved.data.permutation_seed = 8  # another order of the same pixels: another loss
    other = evaluated(saved)
    assert rebuilt == pytest.approx(test_loss, abs=1e-6) and other != pytest.approx(test_loss, abs=1e-6)
