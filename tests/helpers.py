"""Small shared pieces for the tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

import alignlab
from alignlab.data import write_idx
from alignlab.nn.kinds import layer_weight


def run_backward(model: nn.Module, x: torch.Tensor, call=None, seed: int = 0):
    """Output, input gradient and parameter gradients for a fixed random upstream gradient.

    ``call(x)`` runs the model (default: ``model(x)``).
    """
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = (call or model)(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    out.backward(g)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


def with_feedback_equal_to_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model`` converted to FA, every B set to its forward weight."""
    fa = alignlab.convert(copy.deepcopy(model), rule="fa")
    with torch.no_grad():
        for _, layer, feedback in alignlab.converted_layers(fa):
            feedback.B.copy_(layer_weight(layer))
    return fa


def assert_grads_equal(a, b, atol=1e-5, rtol=1e-4):
    out_a, gx_a, g_a = a
    out_b, gx_b, g_b = b
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=rtol)
    torch.testing.assert_close(gx_a, gx_b, atol=atol, rtol=rtol)
    common = set(g_b)
    assert set(g_a) >= common, (sorted(g_a), sorted(g_b))
    for name in common:
        torch.testing.assert_close(g_a[name], g_b[name], atol=atol, rtol=rtol, msg=name)


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle in degrees between two tensors seen as vectors."""
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))


def fake_fashion(directory: Path, n_train: int, n_test: int = 200, noise: int = 100) -> Path:
    """A small learnable dataset in Fashion-MNIST's real IDX files: noise images in [0, noise)
    where class k lights rows 2k and 2k+1."""
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=gen)
        images = torch.randint(0, noise, (n, 28, 28), generator=gen, dtype=torch.uint8)
        images[(torch.arange(28)[None, :] // 2) == labels[:, None]] = 255
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels.to(torch.uint8))
    return directory


def read_metrics(run_dir) -> list[dict]:
    """A run's metrics.jsonl lines without their (machine-dependent) epoch times."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "epoch_time"} for line in lines]
