"""How direct rules (DFA) read the network's output error without a new call signature.

``convert`` installs an :class:`OutputErrorTap` on the root model. For every forward pass of
the root it opens a fresh :class:`ErrorSlot`; the direct layers that run inside that pass keep
a reference to it. One slot per pass: two forwards before one backward (gradient accumulation,
a second shadow pass) never mix their errors. The output error e = ∂L/∂output reaches the
layers by one of two routes, chosen per layer call:

* **Eagerly** (the hook route): after the pass a gradient hook on the output tensor writes e
  into the slot. That hook fires before the backward of any layer the output depends on, so
  every layer finds e there; each layer's backward projects it. A hook sees the output's whole
  gradient however the loss was formed, so a loss computed inside the model
  (``model(**batch).loss``) and an output that the model itself uses further (a hidden state
  named by ``output=``) work.
* **Under torch.compile** (the traced route: ``torch.compiler.is_compiling()``): a hook with a
  side effect and a backward that reads a Python object cannot be traced (``fullgraph=True``
  refuses both), so e goes through autograd itself. Each direct layer records its input x in
  the slot and sends no gradient to it; at the end of the pass the tap applies one
  :class:`Collect` function to the output tensor, with every recorded input (and the
  feedback tensors: dfa's B, direct ldfa's P and Q) as further inputs, and returns its result
  in the output's place. Its backward receives e as the output's gradient and returns each
  layer's input gradient (and P's and Q's gradients) from it. (An auxiliary output of each
  layer whose gradient would be e cannot do it: that output's shape is fixed when the layer
  runs, before e exists.) The loss must therefore be computed from the output the model
  returns: a loss the model computes inside its forward (an output holding a ``loss``), and a
  returned tensor that the model also uses further, do not reach the collector. The first
  raises; the second is not detected (use the model eagerly there). Activation checkpointing
  does not trace either: with ``fullgraph=True`` dynamo refuses the side effect inside the
  checkpointed function; without, it runs that function eagerly (on the hook route), which
  works for ``use_reentrant=False`` and raises for reentrant checkpoints (their recomputed
  layers find no captured error).

The output tensor: the model's output when it is a tensor; else, in a mapping (transformers'
``ModelOutput``), a dataclass, a tuple or a list, ``logits`` where present, otherwise the first
floating tensor whose first dimension is the batch (that of the first tensor the model was
called with), so a scalar loss computed inside the model is never taken; or what
``convert(..., output=...)`` names (a key, an index or a function of the output).

Activation checkpointing (eager): a layer recomputed during the backward
(``torch.utils.checkpoint``, transformers' ``gradient_checkpointing_enable()``) runs outside the
root's forward; it takes the slot whose error the running backward captured last (the tap's
``active`` slot), which is its own pass's. A direct layer called on its own before any backward
raises.

What a direct feedback module provides (rules/dfa.py, rules/ldfa.py), all declared with
defaults on :class:`~alignlab.rules.base.Feedback`: ``project(error, x_shape, conv)``, and
where needed ``direct_params()`` (tensors that learn from e: they are inputs of the layer's
function and get its gradients), ``direct_tensors(error_shape, x_shape, conv, like)`` (other
tensors the backward reads, built at the end of the forward on the traced route, never inside a
traced backward) and ``direct_grads(error, x, x_shape, conv, params, tensors, need_x, needs)``
(the input gradient and the params' gradients, in one go).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd import Function

COLLECT_EAGERLY = False  # tests: take the traced route in eager mode too


class ErrorSlot:
    """Holds the output error of one forward pass (hook route) and the layer calls that the
    pass's collector serves (traced route)."""

    __slots__ = ("error", "tap", "used", "entries")

    def __init__(self, tap: "OutputErrorTap") -> None:
        self.error: Tensor | None = None
        self.tap = tap
        self.used = False  # a direct layer ran in this pass with grad enabled, on the hook route
        self.entries: list[Entry] = []  # layer calls on the traced route

    def capture(self, grad: Tensor) -> None:
        self.error = grad
        self.tap.active = self


class Entry(NamedTuple):
    """One direct layer call on the traced route: what its collector needs."""

    feedback: nn.Module
    x: Tensor  # the layer's input (the collector gives it its gradient)
    conv: object  # None for a Linear, else alignlab.nn.functional.ConvCall
    params: tuple  # direct_params(): tensors that learn from e


def collecting() -> bool:
    """True when direct layers take the traced route (under torch.compile)."""
    return COLLECT_EAGERLY or torch.compiler.is_compiling()


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

    def _close(self, module, args, output):
        slot, self.current = self.current, None
        if slot is None or not (slot.used or slot.entries):
            return None  # no direct layer ran with grad enabled (evaluation, no_grad)
        out = pick_output(output, self.output, self.batch)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"{self.rule}: found no output error in the model's {type(output).__name__} (no 'logits' and no "
                "floating tensor whose first dimension is the batch); name it with convert(..., output=KEY)"
            )
        if slot.used and out.requires_grad:
            out.register_hook(slot.capture)
        if not slot.entries:
            return None
        return _replaced(output, out, collect(out, slot.entries), self.rule)

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
            "convert() was given (call the whole model, or convert the module you call; under torch.compile, "
            "checkpoint activations with use_reentrant=False)"
        )
    return slot


def direct_grads(feedback, error: Tensor, x: Tensor, x_shape, conv, params: tuple, tensors: tuple | None,
                 need_x: bool, needs: tuple) -> tuple[Tensor | None, tuple]:
    """``feedback.direct_grads``, with its ``direct_tensors`` built here where ``tensors`` is
    None (the hook route's backward runs eagerly)."""
    if tensors is None:
        tensors = feedback.direct_tensors(error.shape, x_shape, conv, error)
    return feedback.direct_grads(error, x, x_shape, conv, params, tensors, need_x, needs)


def input_grads(feedback, slot: ErrorSlot, x: Tensor, conv, need_x: bool, params: tuple, needs: tuple):
    """The hook route's backward: the input gradient and the params' gradients from the error
    the slot captured (a one-line error where none was)."""
    if slot.error is None:
        raise RuntimeError(
            f"{feedback.rule_name}: the model's output error was never captured; the loss must be computed "
            "from the output of the model that convert() was given (see convert's output=)"
        )
    return direct_grads(feedback, slot.error, x, x.shape, conv, params, None, need_x, needs)


# --- the traced route ---------------------------------------------------------------------------


class Collect(Function):
    """The identity on the model's output tensor whose backward sends its gradient e to every
    layer call recorded in the pass: ``Collect.apply(out, calls, *tensors)``, ``calls`` a list of
    (feedback, x_shape, conv, number of params, number of tensors), ``tensors`` each call's
    input x, then its params, then its other tensors."""

    @staticmethod
    def forward(ctx, out, calls, *tensors):
        ctx.calls = calls
        ctx.save_for_backward(*tensors)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, error):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
        grads: list = []
        i = 0
        for feedback, x_shape, conv, n_params, n_tensors in ctx.calls:
            x, params = saved[i], saved[i + 1:i + 1 + n_params]
            tensors = saved[i + 1 + n_params:i + 1 + n_params + n_tensors]
            if needs[i] or any(needs[i + 1:i + 1 + n_params]):
                grad_x, pgrads = direct_grads(feedback, error, x, x_shape, conv, params, tensors, needs[i],
                                              needs[i + 1:i + 1 + n_params])
            else:
                grad_x, pgrads = None, (None,) * n_params
            grads += [grad_x, *pgrads, *(None,) * n_tensors]
            i += 1 + n_params + n_tensors
        return (error, None, *grads)


def collect(out: Tensor, entries: list[Entry]) -> Tensor:
    """``out`` through :class:`Collect` for the recorded layer calls; the feedback tensors are
    built here, in the forward (a traced backward cannot build them)."""
    calls, tensors = [], []
    for e in entries:
        extra = tuple(e.feedback.direct_tensors(out.shape, e.x.shape, e.conv, out))
        calls.append((e.feedback, e.x.shape, e.conv, len(e.params), len(extra)))
        tensors += [e.x, *e.params, *extra]
    return Collect.apply(out, calls, *tensors)


def _replaced(output, old: Tensor, new: Tensor, rule: str):
    """The model's output with ``old`` (the output tensor) replaced by ``new``."""
    if output is old:
        return new
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if isinstance(loss, Tensor) and loss.requires_grad:
        raise RuntimeError(f"{rule}: under torch.compile the output error reaches direct feedback only from a loss "
                           "computed outside the model, from its output; this model computed one itself (its output "
                           "has 'loss'): give it no labels and compute the loss from the logits, or run it eagerly")
    if isinstance(output, Mapping):
        for key, value in output.items():
            if value is old:
                output[key] = new  # transformers' ModelOutput sets the attribute too
                return output
    elif dataclasses.is_dataclass(output):
        for f in dataclasses.fields(output):
            if getattr(output, f.name) is old:
                return dataclasses.replace(output, **{f.name: new})
    elif isinstance(output, (tuple, list)) and any(v is old for v in output):
        items = [new if v is old else v for v in output]
        if isinstance(output, list):
            output[:] = items
            return output
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)
    raise RuntimeError(f"{rule}: under torch.compile the output error's tensor must be an element of the model's "
                       f"{type(output).__name__} (at its top level), so that it can be returned through the collector")


# --- shared by the direct rules ------------------------------------------------------------


def per_position(error_shape, x_shape, conv) -> bool:
    """A Linear whose input has the output error's positions gets one error per position."""
    return conv is None and len(x_shape) > 2 and tuple(error_shape[:-1]) == tuple(x_shape[:-1])


def check_batch(feedback, error_shape, x_shape) -> None:
    """One-line ValueError unless the output error and the layer's input share their batch."""
    if x_shape[0] != error_shape[0]:
        raise ValueError(f"{feedback.rule_name}: the output error {tuple(error_shape)} and the input "
                         f"{tuple(x_shape)} of layer {feedback.layer!r} must share their first (batch) dimension")


def summed(error: Tensor) -> Tensor:
    """Each sample's error summed over its positions: (n, C)."""
    return error.reshape(error.shape[0], -1, error.shape[-1]).sum(1)


def spread(g: Tensor, x_shape, conv) -> Tensor:
    """Each sample's input gradient g (n, D) sent to every position of an input shaped ``x_shape``
    (channels second for a conv, last for a Linear), as an expanded view."""
    n, d, k = g.shape[0], g.shape[1], len(x_shape) - 2
    at = (n, d) + (1,) * k if conv is not None else (n,) + (1,) * k + (d,)
    return g.view(at).expand(x_shape)
