"""Runs: typed configs, the training loop, checkpoints and logs."""

from .config import RunConfig, load_config
from .loop import TrainingDiverged, train

__all__ = ["RunConfig", "TrainingDiverged", "load_config", "train"]
