"""Diagnostics during training: angles to BP and ranks, on a fixed probe batch.

Measured at step 0 and then every ``diagnostics.every`` steps (0: at the end of each
epoch), in training mode, on the first ``probe_size`` training samples (no augmentation).
The measurement leaves the model, its gradients and torch's RNG as they were, so a run trains
identically with diagnostics on or off.
"""

from __future__ import annotations

from .. import data
from ..diagnostics.probe import measure


class Diagnose:
    def __init__(self, cfg, dataset: data.Dataset, loss_fn, device="cpu", enabled: bool = True) -> None:
        d = cfg.diagnostics
        self.enabled, self.every = d.enabled and enabled, d.every
        n = min(d.probe_size, len(dataset.train_y))
        x, y = next(iter(data.batches(dataset.train_x[:n], dataset.train_y[:n], batch_size=n,
                                      mean=dataset.mean, std=dataset.std)))
        self.x, self.y = x.to(device), y.to(device)
        self.loss_fn = loss_fn

    def due_at_step(self, step: int) -> bool:
        return self.enabled and self.every > 0 and step % self.every == 0

    @property
    def due_at_epoch_end(self) -> bool:
        return self.enabled and self.every == 0

    def __call__(self, model, step: int, epoch: int) -> dict:
        was_training = model.training
        model.train()
        try:
            values = measure(model, self.loss_fn, self.x, self.y)
        finally:
            model.train(was_training)
        return {"step": step, "epoch": epoch, **values}
