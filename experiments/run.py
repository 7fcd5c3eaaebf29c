"""Run folders: ``runs/<name>/<time>/`` holding config.yaml, metrics.csv, TensorBoard events, checkpoint.pt, eval.csv."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigError

CONFIG, CHECKPOINT = "config.yaml", "checkpoint.pt"


def new_run_dir(cfg: DictConfig) -> Path:
    base = Path(cfg.run_root) / str(cfg.name)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    base.mkdir(parents=True, exist_ok=True)
    path, k = base / stamp, 1
    while True:  # runs started in the same second (a sweep's parallel jobs) each get their own folder
        try:
            path.mkdir()
            break
        except FileExistsError:
            path, k = base / f"{stamp}_{k}", k + 1
    OmegaConf.save(cfg, path / CONFIG, resolve=True)
    return path


def load_run(folder: str | Path) -> tuple[DictConfig, Path]:
    """The saved config and checkpoint path of a run folder, or a one-line error saying what is missing."""
    path = Path(folder)
    for name in (CONFIG, CHECKPOINT):
        if not (path / name).is_file():
            raise ConfigError(f"resume/run: {str(folder)!r} is not a run folder (no {name}); "
                              f"run folders look like runs/<name>/<time>/")
    return OmegaConf.load(path / CONFIG), path / CHECKPOINT


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a run killed while saving keeps its previous checkpoint."""
    tmp = path / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path / CHECKPOINT)
