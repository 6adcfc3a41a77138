"""The data and the model a config describes, built the one way that train, resume, evaluate and
predict share: from a run's config as composed (a DictConfig) or as saved with it (a plain dict,
from config.yaml or a checkpoint). What only training needs (the module, optimizer, Trainer) is
rnnexp.train.build's."""

from __future__ import annotations

from typing import Any


def datamodule(config: Any, **training: Any):
    """The run's SequenceDataModule, seeded by the run's seed (its split, shifts, permutation);
    `training` is what only training passes (steps_per_call, limit_train_batches). Nothing is read yet."""
    from hydra.utils import instantiate

    return instantiate(config["data"], seed=config["seed"], **training)


def model(config: Any, data):
    """The run's classifier, shaped by what the data feed it (its input size and classes)."""
    from hydra.utils import instantiate

    return instantiate(config["model"], input_size=data.input_size, num_classes=data.num_classes)
