"""`hydra/sweeper=rnnexp_grid` (conf/train.yaml's default): Hydra's grid sweep, and at its end, a
failed job or not, a summary of how its jobs ended and the best (rnnexp.sweep_summary). A Hydra
Callback's on_multirun_end would not do: Hydra's grid sweeper raises a job's failure before it."""

# no `from __future__ import annotations`: see optuna_sweeper.py
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore


@dataclass
class RnnexpGridSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.rnnexp_sweepers.grid_sweeper.RnnexpGridSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="rnnexp_grid", node=RnnexpGridSweeperConf, provider="rnnexp")


class RnnexpGridSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from rnnexp.sweep_summary import summarize

        try:
            return super().sweep(arguments)
        finally:
            summarize(self.config.hydra.sweep.dir, str(self.config.get("optimized_metric", "val/acc_best")))
