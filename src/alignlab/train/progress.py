"""A tqdm bar over every training step of a run: epoch, loss, accuracy, time left."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """Progress bar on stderr (off when ``cfg.progress`` is false); one summary line per epoch."""

    def __init__(self, cfg, steps_per_epoch: int, done_epochs: int, enabled: bool = True) -> None:
        self.cfg, self.enabled = cfg, enabled
        self.bar = tqdm(total=steps_per_epoch * cfg.epochs, initial=steps_per_epoch * done_epochs,
                        disable=None if (cfg.progress and enabled) else True, file=sys.stderr, dynamic_ncols=True, unit="step",
                        desc=cfg.run_name())
        self._loss = self._acc = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def epoch(self, epoch: int) -> None:
        self.bar.set_description(f"{self.cfg.run_name()} epoch {epoch}/{self.cfg.epochs}")

    def step(self, loss: float, acc: float | None) -> None:
        # exponential moving averages keep the numbers readable
        self._loss = loss if self._loss is None else 0.9 * self._loss + 0.1 * loss
        if acc is not None:
            self._acc = acc if self._acc is None else 0.9 * self._acc + 0.1 * acc
        self.bar.update(1)
        if self.bar.n % 10 == 0:
            post = {"loss": f"{self._loss:.3f}"} | ({"acc": f"{self._acc:.3f}"} if self._acc is not None else {})
            self.bar.set_postfix(post, refresh=False)

    def log(self, metrics: dict) -> None:
        """A one-line summary of a finished epoch (main process only)."""
        if not self.enabled:
            return
        parts = [f"{k} {v:.4f}" for k, v in metrics.items()
                 if k in ("train_loss", "train_acc", "test_loss", "test_acc") and v is not None]
        line = f"{self.cfg.run_name()} epoch {metrics['epoch']}/{self.cfg.epochs}: " + ", ".join(parts)
        line += f" ({metrics['epoch_time']:.1f} s)"
        self.bar.write(line, file=sys.stderr)
