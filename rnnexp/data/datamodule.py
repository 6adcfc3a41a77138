"""An MNIST-like data set read as a sequence, held in memory and served in batches cut by index."""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch

from rnnexp.data.datasets import DATASETS
from rnnexp.data.idx import load, locate
from rnnexp.errors import ConfigError


def permutation(seed: int, pixels: int = 28 * 28) -> torch.Tensor:
    """The order in which data.view=permuted reads an image's pixels: drawn from `seed` alone, with
    NumPy's RandomState, whose stream NumPy keeps unchanged across versions, so that a run's
    data.permutation_seed (in its config.yaml and its checkpoints) rebuilds the same order."""
    return torch.from_numpy(np.random.RandomState(seed).permutation(pixels))


# How images (N, 28, 28) become sequences (N, steps, features), given data.permutation_seed.
VIEWS = {
    "rows": lambda images, seed: images,  # 28 steps of 28 pixels, top to bottom
    "columns": lambda images, seed: images.transpose(1, 2).contiguous(),  # 28 steps, left to right
    "pixels": lambda images, seed: images.flatten(1).unsqueeze(-1),  # sequential MNIST: 784 steps of 1 pixel
    "permuted": lambda images, seed: images.flatten(1)[:, permutation(seed, images[0].numel())].unsqueeze(-1),
}


class InMemoryBatches:
    """Batches sliced from tensors, in a fresh random order each epoch when `shuffle`.

    No per-sample __getitem__ and collate: one index operation per batch, on whatever device the
    tensors live on. Images are kept as bytes (a quarter of the memory of floats, nothing to
    convert up front) and scaled to [0, 1] floats one batch at a time.

    Epoch e's order is drawn from its own generator, seeded by (`seed`, e), not from the global
    RNG, and the position inside the epoch is counted: `state_dict()` is all it takes to continue
    an epoch where it stopped (Lightning saves it in every checkpoint and hands it back on resume).

    With several processes (DDP: `rank` of `world`), each serves its own share of every epoch, as
    Lightning's DistributedSampler would for a DataLoader: the epoch's order dealt out in turn,
    order[rank::world]. Shuffled (training) shares are padded from the start of the order to the
    same size, so every process steps the same number of batches and their gradient all-reduces
    stay in step; evaluation shares are not padded, so every example counts exactly once in the
    metrics, which torchmetrics sums over the processes.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self.epoch = -1  # the epoch being served; the first __iter__ starts epoch 0
        self.position = 0  # batches of that epoch served so far
        self._resume_at: int | None = None

    def __len__(self) -> int:
        return math.ceil(self.share / self.batch_size)

    @property
    def share(self) -> int:
        """How many examples this process serves each epoch."""
        n = len(self.y)
        return math.ceil(n / self.world) if self.shuffle else len(range(self.rank, n, self.world))

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.y), generator=generator).to(self.x.device)

    def __iter__(self):
        if self._resume_at is None:
            self.epoch, self.position = self.epoch + 1, 0
        else:  # continue the epoch a checkpoint stopped in
            self.position, self._resume_at = self._resume_at, None
        n, size = self.share, self.batch_size
        order = self.order(self.epoch) if self.shuffle else None
        if self.world > 1:
            if order is None:
                order = torch.arange(len(self.y), device=self.x.device)
            elif len(order) < n * self.world:  # padded with the epoch's first examples
                order = torch.cat([order, order[: n * self.world - len(order)]])
            order = order[self.rank :: self.world]
        for start in range(self.position * size, n, size):
            idx = slice(start, start + size) if order is None else order[start : start + size]
            self.position += 1
            yield _scale(self.x[idx]), self.y[idx]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if state["position"] >= len(self):  # stopped at the end of an epoch: the next one starts afresh
            self.epoch, self._resume_at = state["epoch"], None
        else:
            self.epoch, self._resume_at = state["epoch"], state["position"]


def _scale(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32).div_(255.0)


class SequenceDataModule(pl.LightningDataModule):
    """Train / validation / test splits of MNIST or Fashion-MNIST (`dataset`, a key of DATASETS),
    served as (batch, steps, features) floats in [0, 1].

    The validation set is the first `val_size` training images, as in the classic TensorFlow
    tutorials (55,000 / 5,000); the test set is all 10,000 test images. `view` says how an image
    becomes a sequence (VIEWS); `permutation_seed` draws the pixel order of the permuted view.
    """

    def __init__(
        self,
        dataset: str = "mnist",
        root: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        view: str = "rows",
        permutation_seed: int = 0,
        download: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ConfigError(f"data.dataset={dataset}: choose one of {', '.join(DATASETS)}")
        if view not in VIEWS:
            raise ConfigError(f"data.view={view}: choose one of {', '.join(VIEWS)}")
        self.dataset, self.root, self.view, self.permutation_seed = DATASETS[dataset], root, view, permutation_seed
        self.batch_size, self.eval_batch_size, self.val_size = batch_size, eval_batch_size, val_size
        self.download, self.seed = download, seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def input_size(self) -> int:
        """Features per time step: 28 for rows and columns, 1 for pixels and permuted."""
        return self.sequences(torch.zeros(1, 28, 28, dtype=torch.uint8)).shape[-1]

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names: label i is classes[i]."""
        return self.dataset.classes

    def sequences(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 28, 28) as this view's sequences (N, steps, features)."""
        return VIEWS[self.view](images, self.permutation_seed)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, 28, 28) as the model reads them in training: this view's sequences of
        floats in [0, 1]."""
        return _scale(self.sequences(images))

    def images(self, split: str, count: int | None = None) -> torch.Tensor:
        """A split's images (its first `count`) as read, uint8 (N, 28, 28), to show them (the splits
        hold sequences)."""
        arrays = load(self.root, self.dataset, download_missing=False)  # parsed once per process
        v = self.val_size
        chosen = {"test": arrays["test_images"], "val": arrays["train_images"][:v], "train": arrays["train_images"][v:]}
        return torch.tensor(chosen[split][:count])  # a copy of those alone

    def prepare_data(self) -> None:
        locate(self.root, self.dataset, download_missing=self.download)  # fetch once, before any split is built

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = load(self.root, self.dataset, download_missing=self.download)
        train_x, train_y = self._tensors(arrays["train_images"], arrays["train_labels"])
        if not 0 < self.val_size < len(train_y):
            raise ConfigError(
                f"data.val_size={self.val_size}: must be between 1 and {len(train_y) - 1} "
                f"(there are {len(train_y)} training images in {self.root})"
            )
        v = self.val_size
        self.splits = {
            "train": (train_x[v:], train_y[v:]),
            "val": (train_x[:v], train_y[:v]),
            "test": self._tensors(arrays["test_images"], arrays["test_labels"]),
        }

    def _tensors(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, steps, features) and int64 labels, copied from the read-only arrays."""
        return self.sequences(torch.tensor(images)), torch.from_numpy(labels.astype(np.int64))

    def _batches(self, split: str, batch_size: int, shuffle: bool) -> InMemoryBatches:
        self.setup()
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        x, y = self.splits[split]
        if x.device != device:  # keep the split on the training device: no copy per batch
            x, y = x.to(device), y.to(device)
            self.splits[split] = (x, y)
        return InMemoryBatches(x, y, batch_size, shuffle, self.seed, rank, world)

    def train_dataloader(self) -> InMemoryBatches:
        return self._batches("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> InMemoryBatches:
        return self._batches("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", self.eval_batch_size, shuffle=False)
