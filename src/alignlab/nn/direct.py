"""How direct rules (DFA) read the network's output error without a new call signature.

``convert`` installs an :class:`OutputErrorTap` on the root model. For every forward pass of
the root it opens a fresh :class:`ErrorSlot`; the direct layers that run inside that pass keep
a reference to it; after the pass a gradient hook on the output tensor writes the output
error e = ∂L/∂output into the slot. That hook fires before any layer's backward, so every
layer finds e there. One slot per pass: two forwards before one backward (gradient
accumulation, a second shadow pass) never mix their errors.

The output tensor: the model's output when it is a tensor; else, in a mapping (transformers'
``ModelOutput``), a dataclass, a tuple or a list, ``logits`` where present, otherwise the first
floating tensor whose first dimension is the batch (that of the first tensor the model was
called with), so a scalar loss computed inside the model is never taken; or what
``convert(..., output=...)`` names (a key, an index or a function of the output).

Activation checkpointing: a layer recomputed during the backward (``torch.utils.checkpoint``,
transformers' ``gradient_checkpointing_enable()``) runs outside the root's forward; it takes the
slot whose error the running backward captured last (the tap's ``active`` slot), which is its
own pass's. A direct layer called on its own before any backward raises.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from torch import Tensor, nn


class ErrorSlot:
    """Holds the output error of one forward pass."""

    __slots__ = ("error", "tap", "used")

    def __init__(self, tap: "OutputErrorTap") -> None:
        self.error: Tensor | None = None
        self.tap = tap
        self.used = False  # a direct layer ran in this pass with grad enabled

    def capture(self, grad: Tensor) -> None:
        self.error = grad
        self.tap.active = self


def check_output(output, rule: str, direct: bool) -> None:
    """One-line ValueError for an ``output=`` that cannot apply."""
    if output is None:
        return
    if not direct:
        raise ValueError(f"output= tells a direct-feedback rule where the output error is; rule {rule!r} does not use it")
    if not (isinstance(output, (str, int)) or callable(output)) or isinstance(output, bool):
        raise ValueError(f"output={output!r} is not valid; give a key, an index or a function of the model's output")


def _is_output(t, batch: int | None) -> bool:
    return isinstance(t, Tensor) and t.is_floating_point() and t.dim() >= 1 and (batch is None or t.shape[0] == batch)


def pick_output(output, selector, batch: int | None) -> Tensor | None:
    """The tensor of the model's ``output`` whose error direct layers receive (see module doc)."""
    if selector is not None:
        if callable(selector):
            return selector(output)
        if isinstance(selector, str) and not isinstance(output, Mapping):
            return getattr(output, selector)
        return output[selector]
    if isinstance(output, Tensor):
        return output if output.dim() >= 1 else None
    if isinstance(output, Mapping):
        if isinstance(output.get("logits"), Tensor):
            return output["logits"]
        values = list(output.values())
    elif dataclasses.is_dataclass(output):
        values = [getattr(output, f.name) for f in dataclasses.fields(output)]
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        return None
    return next((v for v in values if _is_output(v, batch)), None)


def _batch_size(args, kwargs) -> int | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor) and value.dim() >= 1:
            return value.shape[0]
    return None


class OutputErrorTap:
    """Forward hooks on the root model that capture its output error each pass."""

    def __init__(self, model: nn.Module, output=None, rule: str = "direct feedback") -> None:
        self.output = output  # convert's output= selector, or None
        self.rule = rule  # named in messages
        self.current: ErrorSlot | None = None  # the slot of the forward pass now running
        self.active: ErrorSlot | None = None  # the slot the running backward captured last
        self.batch: int | None = None
        self.handles = [
            model.register_forward_pre_hook(self._open, with_kwargs=True),
            model.register_forward_hook(self._close),
        ]

    def _open(self, module, args, kwargs) -> None:
        self.current = ErrorSlot(self)
        self.batch = _batch_size(args, kwargs)

    def _close(self, module, args, output) -> None:
        slot, self.current = self.current, None
        if slot is None or not slot.used:
            return  # no direct layer ran with grad enabled (evaluation, no_grad)
        out = pick_output(output, self.output, self.batch)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"{self.rule}: found no output error in the model's {type(output).__name__} (no 'logits' and no "
                "floating tensor whose first dimension is the batch); name it with convert(..., output=KEY)"
            )
        if out.requires_grad:
            out.register_hook(slot.capture)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def open_slot(feedback) -> ErrorSlot:
    """The error slot of the forward pass now running (or, for a layer recomputed during a
    backward, of the pass that backward serves)."""
    tap = feedback.tap
    slot = None if tap is None else tap.current or tap.active
    if slot is None:
        raise RuntimeError(
            f"{feedback.rule_name}: a direct-feedback layer ran outside a forward pass of the model that "
            "convert() was given (call the whole model, or convert the module you call)"
        )
    slot.used = True
    return slot
