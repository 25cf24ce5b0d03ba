"""Backprop versus feedback alignment on Fashion-MNIST, in under a minute on a CPU.

The same MLP (784-512-512-10, ReLU), from the same initial weights and
seeing the same batches, is trained once with rule ``"bp"`` and once with
rule ``"fa"`` via :func:`alignlab.convert`, using an ordinary PyTorch loop.
"""

from __future__ import annotations

import time

import torch
from torch import nn

import alignlab
from alignlab.data import TensorLoader, load_fashion_mnist, normalize
from alignlab.data.locate import PathLike

RULES = ("bp", "fa")
HIDDEN = 512
NUM_CLASSES = 10
LEARNING_RATE = 1e-3
EVAL_BATCH_SIZE = 1000


def make_mlp(in_features: int = 28 * 28) -> nn.Sequential:
    """The demo network: two hidden ReLU layers of width 512."""
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, NUM_CLASSES),
    )


def train_epoch(model: nn.Module, loader: TensorLoader, optimizer: torch.optim.Optimizer) -> float:
    """Run one pass over ``loader``; return the mean training loss per sample."""
    model.train()
    total = torch.zeros(())
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * y.shape[0]
    return total.item() / loader.num_samples


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``."""
    model.eval()
    correct = 0
    for xb, yb in TensorLoader(x, y, batch_size=EVAL_BATCH_SIZE):
        correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct / y.shape[0]


def train_with_rule(
    rule: str,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    epochs: int,
    batch_size: int,
    seed: int,
) -> float:
    """Train a fresh MLP with ``rule``, printing each epoch; return test accuracy."""
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(seed)
    model = alignlab.convert(make_mlp(), rule=rule)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loader = TensorLoader(train_x, train_y, batch_size=batch_size, shuffle=True, seed=seed)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss = train_epoch(model, loader, optimizer)
        took = time.perf_counter() - start
        print(f"[{rule}] epoch {epoch}/{epochs}  train loss {loss:.4f}  ({took:.1f} s)", flush=True)
    acc = accuracy(model, test_x, test_y)
    print(f"[{rule}] test accuracy {100 * acc:.2f}%", flush=True)
    return acc


def run_demo(
    epochs: int = 2,
    batch_size: int = 128,
    data_dir: PathLike | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Train the MLP with each rule in :data:`RULES`; return test accuracy per rule.

    Raises :class:`alignlab.data.DatasetError` if Fashion-MNIST cannot be found.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    train_x, train_y, test_x, test_y = load_fashion_mnist(data_dir)
    data = (_flat(train_x), train_y, _flat(test_x), test_y)
    print(
        f"Fashion-MNIST: {len(train_y)} train / {len(test_y)} test images; "
        f"MLP 784-{HIDDEN}-{HIDDEN}-{NUM_CLASSES}, Adam lr {LEARNING_RATE:g}, "
        f"{epochs} epoch(s), batch {batch_size}",
        flush=True,
    )
    results = {rule: train_with_rule(rule, data, epochs, batch_size, seed) for rule in RULES}
    _print_summary(results, epochs)
    return results


def _flat(images: torch.Tensor) -> torch.Tensor:
    return normalize(images).flatten(start_dim=1)


def _print_summary(results: dict[str, float], epochs: int) -> None:
    bp, fa = results["bp"], results["fa"]
    print()
    print(f"bp (backprop):           {100 * bp:.2f}% test accuracy after {epochs} epoch(s)")
    print(
        f"fa (feedback alignment): {100 * fa:.2f}% test accuracy after {epochs} epoch(s), "
        f"{100 * (fa - bp):+.2f} points vs bp"
    )
