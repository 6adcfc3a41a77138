import json

import numpy as np
import pytest
import torch
from conftest import TINY, run_train
from omegaconf import OmegaConf

from rnnexp.data.datamodule import VIEWS, InMemoryBatches, SequenceDataModule, permutation, shifted
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
    [(x, _)] = next(iter(_views(tiny_mnist)["permuted"].train_dataloader()))
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
    test_loss, best = metrics["test/loss"], str(run / metrics["best_checkpoint"])  # relative to the run folder

    def evaluated(cfg) -> float:  # the run's best weights (ckpt_path) on the test split a config rebuilds
        cfg.ckpt_path, cfg.logger, cfg.callbacks, cfg.trainer.enable_progress_bar = best, None, None, False
        datamodule, module, trainer = build(cfg)
        trainer.test(module, datamodule=datamodule, verbose=False)
        return float(trainer.callback_metrics["test/loss"])

    rebuilt = evaluated(OmegaConf.create(checkpoint["config"]))
    saved.data.permutation_seed = 8  # another order of the same pixels: another loss
    other = evaluated(saved)
    assert rebuilt == pytest.approx(test_loss, abs=1e-6) and other != pytest.approx(test_loss, abs=1e-6)


def test_training_steps_get_the_same_batches_in_the_same_order_several_at_a_time():
    x = torch.arange(23, dtype=torch.uint8).view(23, 1, 1)
    one = InMemoryBatches(x, torch.arange(23), batch_size=2, shuffle=True, seed=3)
    four = InMemoryBatches(x, torch.arange(23), batch_size=2, shuffle=True, seed=3, per_step=4)
    assert (len(one), one.steps, len(four), four.steps) == (12, 12, 3, 12)
    for _ in range(2):  # two epochs
        items = list(four)
        assert [len(item) for item in items] == [4, 4, 4]
        assert [y.tolist() for item in items for _, y in item] == [y.tolist() for _, y in one]


def test_an_epoch_stopped_between_training_steps_continues_with_the_next_batch():
    x = torch.arange(23, dtype=torch.uint8).view(23, 1, 1)
    whole = [y.tolist() for item in InMemoryBatches(x, torch.arange(23), 2, True, seed=3, per_step=4) for _, y in item]
    first = InMemoryBatches(x, torch.arange(23), 2, True, seed=3, per_step=4)
    next(iter(first))
    resumed = InMemoryBatches(x, torch.arange(23), 2, True, seed=3, per_step=4)
    resumed.load_state_dict(first.state_dict())
    assert first.state_dict() == {"epoch": 0, "position": 4}
    assert [y.tolist() for item in resumed for _, y in item] == whole[4:]


def test_shift_moves_each_image_by_its_offset_and_fills_with_black():
    image = torch.zeros(1, 5, 5, dtype=torch.uint8)
    image[0, 2, 2] = 255  # one white pixel in the middle
    for dy, dx in [(0, 0), (2, 2), (4, 1), (1, 3)]:
        moved = shifted(image, 2, torch.tensor([[dy, dx]]))
        # offsets run 0 to 2 * shift: (2, 2) leaves it in place, (0, 0) moves it 2 down and 2 right
        expected = torch.zeros(1, 5, 5, dtype=torch.uint8)
        row, col = 2 + 2 - dy, 2 + 2 - dx
        if 0 <= row < 5 and 0 <= col < 5:
            expected[0, row, col] = 255
        assert torch.equal(moved, expected), (dy, dx)


def test_shifted_training_images_differ_each_epoch_the_same_way_on_resume(tiny_mnist):
    dm = SequenceDataModule(root=str(tiny_mnist), val_size=50, batch_size=32, download=False, shift=2, seed=1)
    dm.setup()
    plain = SequenceDataModule(root=str(tiny_mnist), val_size=50, batch_size=32, download=False, seed=1)
    plain.setup()
    batches, unshifted = dm.train_dataloader(), plain.train_dataloader()
    epoch0, epoch0_plain = [b for item in batches for b in item], [b for item in unshifted for b in item]
    assert all(torch.equal(y, y0) for (_, y), (_, y0) in zip(epoch0, epoch0_plain))  # the same images, in order
    assert not torch.equal(epoch0[0][0], epoch0_plain[0][0])  # moved
    state = batches.state_dict()
    epoch1 = [x for item in batches for x, _ in item]
    again = dm.train_dataloader()
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(epoch1, [x for item in again for x, _ in item]))
    assert not torch.equal(epoch1[0], epoch0[0][0])  # new offsets (and a new order) each epoch


def test_shift_applies_to_the_image_before_the_view(tiny_mnist):
    kw = dict(root=str(tiny_mnist), val_size=50, batch_size=8, download=False, shift=2, seed=1)
    rows, pixels = SequenceDataModule(**kw), SequenceDataModule(**kw, view="pixels")
    (xr, _), (xp, _) = next(iter(rows.train_dataloader()))[0], next(iter(pixels.train_dataloader()))[0]
    assert xp.shape == (8, 784, 1) and torch.equal(xr.flatten(1), xp.flatten(1))
