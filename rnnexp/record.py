"""What a run leaves in its folder for people and tools: config.yaml and metrics.json.

metrics.json always says the run's status (running, completed, failed, interrupted) so that a
report can tell a failed or unfinished run from a finished one. Files are replaced atomically: a
reader never sees half a file, whenever the run is killed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

METRICS = "metrics.json"
CONFIG = "config.yaml"


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RunRecord:
    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data: dict = {}

    def save_config(self, cfg: DictConfig) -> None:
        """The composed config with every interpolation resolved: what this run really used."""
        write_atomic(self.dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))

    def update(self, **fields) -> None:
        self.data.update(fields)
        write_atomic(self.dir / METRICS, json.dumps(self.data, indent=2) + "\n")


def read_metrics(run_dir: str | os.PathLike) -> dict:
    return json.loads((Path(run_dir) / METRICS).read_text())
