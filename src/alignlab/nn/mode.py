"""A switch that makes every feedback layer transport weights exactly (BP).

Diagnostics use it for a shadow pass that computes the true gradient of a model trained by
another rule::

    with alignlab.nn.exact():
        true_grads = torch.autograd.grad(loss_fn(model(x), y), params)
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

_EXACT: ContextVar[bool] = ContextVar("alignlab_exact", default=False)


def exact_enabled() -> bool:
    """True inside ``with exact():``."""
    return _EXACT.get()


@contextmanager
def exact():
    """Forward passes run inside this block build graphs whose backward is exact BP."""
    token = _EXACT.set(True)
    try:
        yield
    finally:
        _EXACT.reset(token)
