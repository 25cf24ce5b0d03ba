"""A switch that makes every feedback layer transport weights exactly (BP).

Diagnostics use it for a shadow pass that computes the true gradient of a model trained by
another rule::

    with alignlab.nn.exact():
        true_grads = torch.autograd.grad(loss_fn(model(x), y), params)
"""

from __future__ import annotations

from contextlib import contextmanager

# A plain module global, not a ContextVar: torch.compile traces a global read (guarding on its
# value) but not ContextVar.get, which would break the graph at every converted layer.
_exact = False


def exact_enabled() -> bool:
    """True inside ``with exact():``."""
    return _exact


@contextmanager
def exact():
    """Forward passes run inside this block build graphs whose backward is exact BP."""
    global _exact
    previous, _exact = _exact, True
    try:
        yield
    finally:
        _exact = previous
