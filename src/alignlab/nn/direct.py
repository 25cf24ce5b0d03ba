"""How direct rules (DFA) read the network's output error without a new call signature.

``convert`` installs an :class:`OutputErrorTap` on the root model. For every forward pass of
the root it opens a fresh :class:`ErrorSlot`; the direct layers that run inside that pass keep
a reference to it; after the pass a gradient hook on the output tensor writes the output
error e = ∂L/∂output into the slot. That hook fires before any layer's backward, so every
layer finds e there. One slot per pass: two forwards before one backward (gradient
accumulation, a second shadow pass) never mix their errors.
"""

from __future__ import annotations

from torch import Tensor, nn


class ErrorSlot:
    """Holds the output error of one forward pass."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: Tensor | None = None

    def capture(self, grad: Tensor) -> None:
        self.error = grad


def first_tensor(output) -> Tensor | None:
    """The model output that carries the error: a tensor, or the first tensor of a tuple/list."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


class OutputErrorTap:
    """Forward hooks on the root model that capture its output error each pass."""

    def __init__(self, model: nn.Module) -> None:
        self.current: ErrorSlot | None = None
        self.pending: list = []  # (feedback, input shape, weight) waiting for the output's shape
        self.handles = [
            model.register_forward_pre_hook(self._open),
            model.register_forward_hook(self._close),
        ]

    def _open(self, module, args) -> None:
        self.current = ErrorSlot()

    def _close(self, module, args, output) -> None:
        slot, self.current = self.current, None
        out = first_tensor(output)
        if out is None:
            if self.pending:
                raise TypeError(
                    f"direct feedback needs the model to return a tensor (or a tuple/list starting "
                    f"with one); got {type(output).__name__}"
                )
            return
        for feedback, x_shape, weight in self.pending:
            feedback.materialize(out.shape, x_shape, like=weight)
        self.pending.clear()
        if out.requires_grad:
            out.register_hook(slot.capture)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def open_slot(feedback, x: Tensor, weight: Tensor) -> ErrorSlot:
    """The error slot of the forward pass now running; queues ``feedback`` to be built."""
    tap = getattr(feedback, "tap", None)
    if tap is None or tap.current is None:
        raise RuntimeError(
            "dfa: a direct-feedback layer ran outside a forward pass of the model that "
            "convert() was given (call the whole model, or convert the module you call)"
        )
    if feedback.B is None and all(f is not feedback for f, _, _ in tap.pending):
        tap.pending.append((feedback, x.shape, weight))
    return tap.current
