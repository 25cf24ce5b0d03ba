"""TensorBoard event files of a run (through tensorboardX: no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

from tensorboardX import SummaryWriter

from . import rundir


class TBLog:
    """Scalars of each finished epoch under ``run_dir/tb``, indexed by training step.

    On resume, ``purge_step`` drops events written after the last checkpoint, so the curves
    of a resumed run have no doubled points.
    """

    def __init__(self, run_dir: Path, purge_step: int | None, enabled: bool = True) -> None:
        self.writer = SummaryWriter(str(Path(run_dir) / rundir.TB), purge_step=purge_step) if enabled else None

    def __enter__(self) -> "TBLog":
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()

    def log(self, metrics: dict) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, metrics["step"])
        self.writer.flush()
