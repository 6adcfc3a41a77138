import numpy as np
import pytest
import torch

from rnnexp.data.datamodule import InMemoryBatches, SequenceDataModule
from rnnexp.data.datasets import MNIST
from rnnexp.data.idx import load


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
