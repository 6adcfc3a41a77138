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

    With `per_step` set, each item is a list of up to that many batches, cut from one gather: the
    optimizer steps of one Lightning training step (ClassifierModule.training_step), so that
    Lightning's fixed cost per step is paid once for several. Items are cut from the start of the
    epoch (the last may be shorter), so every epoch has the same number of them, as Lightning
    expects. `len()` counts the items; `steps` counts batches; the position counts batches either
    way, and a checkpoint taken between items resumes at the next one.

    With `limit` set, an epoch ends early, as Lightning's limit_train_batches cuts it: after `limit`
    batches (an int) or that fraction of them (a float). The position is measured against the cut
    epoch, so a checkpoint taken at its end resumes at the start of the next one.

    With `shift` > 0 (training), `x` holds images (N, H, W) and each is moved by up to `shift`
    pixels along each axis (a fresh random offset each time it is served, the uncovered border
    black) before `view` makes it a sequence: augmentation on the device, drawn per (seed, epoch,
    batch) so that a resumed epoch draws the same offsets.
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
        per_step: int | None = None,
        shift: int = 0,
        view=None,
        limit: int | float | None = None,
    ):
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.rank, self.world, self.per_step, self.shift, self.view = rank, world, per_step, shift, view
        self.limit = limit
        if isinstance(limit, float) and int(limit * self.batches) < 1:
            raise ConfigError(
                f"trainer.limit_train_batches={limit}: less than one of the {self.batches} batches of an epoch; "
                "give a larger fraction or a number of batches"
            )
        self.epoch = -1  # the epoch being served; the first __iter__ starts epoch 0
        self.position = 0  # batches of that epoch served so far
        self._resume_at: int | None = None

    def __len__(self) -> int:
        return math.ceil(self.steps / (self.per_step or 1))

    @property
    def steps(self) -> int:
        """Batches per epoch (cut to `limit`)."""
        if self.limit is None:
            return self.batches
        return min(self.batches, int(self.limit * self.batches) if isinstance(self.limit, float) else self.limit)

    @property
    def batches(self) -> int:
        """Batches in this process's share of an epoch, uncut."""
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
        span, stop = size * (self.per_step or 1), min(n, self.steps * size)
        for start in range(self.position * size, stop, span):
            end = min(start + span, stop)
            idx = slice(start, end) if order is None else order[start:end]
            x, y = self.x[idx], self.y[idx]
            if self.shift:
                x = self.view(shifted(x, self.shift, self._offsets(len(y), start)))
            x = scale(x)
            self.position += math.ceil((end - start) / size)
            yield (x, y) if self.per_step is None else list(zip(x.split(size), y.split(size)))

    def _offsets(self, n: int, start: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + start) % 2**63)
        return torch.randint(0, 2 * self.shift + 1, (n, 2), generator=generator).to(self.x.device)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if state["position"] >= self.steps:  # stopped at the end of an epoch: the next one starts afresh
            self.epoch, self._resume_at = state["epoch"], None
        else:
            self.epoch, self._resume_at = state["epoch"], state["position"]


def shifted(images: torch.Tensor, shift: int, offsets: torch.Tensor) -> torch.Tensor:
    """Images (N, H, W) each moved by offsets (N, 2) - shift pixels down and right (offsets in
    [0, 2 * shift]), filling with zeros: one gather from the zero-padded images."""
    n, height, width = images.shape
    padded = torch.nn.functional.pad(images, (shift, shift, shift, shift))
    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # (N, H): source rows in padded
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)
    return padded[torch.arange(n, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]]


def scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1]."""
    return images.to(torch.float32).div_(255.0)


class SequenceDataModule(pl.LightningDataModule):
    """Train / validation / test splits of MNIST or Fashion-MNIST (`dataset`, a key of DATASETS),
    served as (batch, steps, features) floats in [0, 1].

    The validation set is the first `val_size` training images, as in the classic TensorFlow
    tutorials (55,000 / 5,000); the test set is all 10,000 test images. `view` says how an image
    becomes a sequence (VIEWS); `permutation_seed` draws the pixel order of the permuted view.
    `shift` > 0 augments the training images (InMemoryBatches: random moves of up to that many
    pixels, applied to the image before the view); `steps_per_call` batches go to each training
    step of the module.
    """

    def __init__(
        self,
        dataset: str = "mnist",
        root: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        view: str = "rows",
        shift: int = 0,
        permutation_seed: int = 0,
        download: bool = True,
        seed: int = 0,
        steps_per_call: int = 1,
        limit_train_batches: int | float | None = None,
    ):
        super().__init__()
        if dataset not in DATASETS:
            raise ConfigError(f"data.dataset={dataset}: choose one of {', '.join(DATASETS)}")
        if view not in VIEWS:
            raise ConfigError(f"data.view={view}: choose one of {', '.join(VIEWS)}")
        self.dataset, self.root, self.view, self.permutation_seed = DATASETS[dataset], root, view, permutation_seed
        self.batch_size, self.eval_batch_size, self.val_size = batch_size, eval_batch_size, val_size
        self.download, self.seed, self.shift, self.steps_per_call = download, seed, shift, steps_per_call
        self.limit_train_batches = limit_train_batches
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.arrays: dict[str, np.ndarray] = {}  # the four arrays as read (idx.load's, memoized there)

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
        return scale(self.sequences(images))

    def images(self, split: str, count: int | None = None) -> torch.Tensor:
        """A split's images (its first `count`) as read, uint8 (N, 28, 28), to show them (the splits
        hold sequences)."""
        self.setup()  # the arrays setup read: not read again, nor its warnings said again each validation
        arrays, v = self.arrays, self.val_size
        chosen = {"test": arrays["test_images"], "val": arrays["train_images"][:v], "train": arrays["train_images"][v:]}
        return torch.tensor(chosen[split][:count])  # a copy of those alone

    def prepare_data(self) -> None:
        locate(self.root, self.dataset, download_missing=self.download)  # fetch once, before any split is built

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.arrays = arrays = load(self.root, self.dataset, download_missing=self.download)  # read-only, shared
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
        if self.shift:  # shifted as images, then made sequences, batch by batch
            self.splits["train_images"] = (torch.tensor(arrays["train_images"][v:]), train_y[v:])

    def _tensors(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, steps, features) and int64 labels, copied from the read-only arrays."""
        return self.sequences(torch.tensor(images)), torch.from_numpy(labels.astype(np.int64))

    def _batches(self, split: str, batch_size: int, shuffle: bool, **options) -> InMemoryBatches:
        """A split's batches on the training device, in this process's share; `options` as InMemoryBatches
        takes them (per_step, shift, limit)."""
        self.setup()
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        x, y = self.splits[split]
        if x.device != device:  # keep the split on the training device: no copy per batch
            x, y = x.to(device), y.to(device)
            self.splits[split] = (x, y)
        return InMemoryBatches(x, y, batch_size, shuffle, self.seed, rank, world, view=self.sequences, **options)

    def train_dataloader(self) -> InMemoryBatches:
        """Lists of `steps_per_call` batches: one per training step of the module. One batch at a
        time with several processes, whose gradient all-reduce pairs each forward with one backward."""
        world = self.trainer.world_size if self.trainer else 1
        per_step = self.steps_per_call if world == 1 else 1
        split = "train_images" if self.shift else "train"
        return self._batches(
            split, self.batch_size, shuffle=True, per_step=per_step, shift=self.shift, limit=self.limit_train_batches
        )

    def val_dataloader(self) -> InMemoryBatches:
        return self._batches("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", self.eval_batch_size, shuffle=False)
