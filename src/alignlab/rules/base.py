"""What every learning rule is made of.

A *rule* is a typed dataclass of options that builds, for each converted weight, a
:class:`Feedback` module: the object that says which tensor carries that layer's error
backwards. Rules know nothing about training loops or optimizers.

The feedback layers of :mod:`alignlab.nn` call only the methods declared on :class:`Feedback`
(each with a documented default), so a new rule is one module that subclasses these two
classes and decorates its :class:`Rule` with :func:`alignlab.rules.register`:

* ``matrix(weight)`` — a tensor shaped like ``weight`` that stands in ``weight``'s place in the
  backward pass (FA, sign-symmetry, KP). If it requires grad, it receives the layer's true
  weight gradient as its own gradient (this is how KP learns B). ``None`` means exact
  transport (BP).
* ``factors(weight)`` — two factors (B, R), B (N_out × m) and R (m × the rest of W's shape),
  to send the layer's error through in turn (grad_x = δ·B·R; pfa's B then R, ldfa's Pᵀ then Q);
  each backward forms B·R only where that costs less (:mod:`alignlab.nn.product`); B's gradient,
  where B learns, is ``factor_grad(error, h, dim)`` (ldfa's Oja step); default None: ``matrix``.
* ``own_input_grad = True`` and ``input_grad(grad, x_shape, conv)`` — the feedback computes the
  layer's input gradient itself (fa's untied conv feedback: a kernel at every position).
* ``direct = True`` and ``project(error, x_shape, conv)`` — the layer's input gradient
  is a projection of the network's output error (DFA); see :mod:`alignlab.nn.direct`;
  ``direct_params``, ``direct_tensors`` and ``direct_grads`` let such feedback learn from the
  output error and the layer's input (direct ldfa) and build its tensors where compile can.
* ``weight_shape`` and ``resize(weight)`` — feedback that follows a weight of a new shape.

A new module in ``alignlab/rules/`` is imported, and so registered, with the package; the
contract checks of :mod:`alignlab.testing` then run on it (``tests/test_contract.py``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn


class Feedback(nn.Module):
    """The feedback path of one weight tensor. Subclasses hold the feedback tensors.

    :meth:`Rule.build` gives every feedback its rule's name (``rule_name``) and the layer's
    name in the model (``layer``); messages name both.
    """

    direct: ClassVar[bool] = False  # True: the input gradient is ``project``'s, not δ·matrix
    own_input_grad: ClassVar[bool] = False  # True: the input gradient is ``input_grad``'s (untied conv feedback)
    has_factors: ClassVar[bool] = False  # True: ``factors`` may return (B, R)
    rule_name: str = ""
    layer: str = ""
    tap = None  # direct feedback: the root model's OutputErrorTap (alignlab.nn.direct), set by convert

    @property
    def weight_shape(self) -> torch.Size | None:
        """The weight shape this feedback was built for (None: it fits any weight). When the
        layer's weight has another shape at a forward pass, :meth:`resize` is called first."""
        return None

    def resize(self, weight: Tensor) -> None:
        """Rebuild the feedback tensors for a weight of a new shape. Rules that can keep the
        existing rows and draw new ones as at conversion override this; the default is a
        one-line error that says what to do."""
        raise RuntimeError(
            f"{self.rule_name}: layer {self.layer!r} now has a weight of shape {tuple(weight.shape)}, but its "
            f"feedback was built for {tuple(self.weight_shape)} and this rule cannot resize it; convert the "
            "model again after resizing it")

    def __init__(self, constrain_weights: Tensor | None = None) -> None:
        """``constrain_weights``: the layer's weight when the rule's ``constrain_weights`` option
        is on; its norm is then held (:func:`constrain_norm`, :meth:`prepare`)."""
        super().__init__()
        self.register_load_state_dict_pre_hook(_take_saved_shapes)
        if constrain_weights is not None:
            constrain_norm(self, constrain_weights)

    def matrix(self, weight: Tensor) -> Tensor | None:
        """Tensor used instead of ``weight`` to send errors backwards; ``None`` = exact."""
        raise NotImplementedError

    def prepare(self, weight: Tensor) -> None:
        """Called before every forward use of the layer's weight, in any grad mode (evaluation,
        ``no_grad`` and :func:`alignlab.nn.exact` included); the default holds W's norm where
        the rule's ``constrain_weights`` asked for it (:func:`hold_norm`), and does nothing else."""
        if self.holds_norm:
            hold_norm(self, weight)

    holds_norm = False  # constrain_weights: True once constrain_norm gave it a weight_norm buffer

    def project(self, error: Tensor, x_shape: torch.Size, conv=None) -> Tensor:
        """Direct feedback only (``direct = True``): the layer's input gradient, shaped
        ``x_shape``, from the model's output error ``error`` (N, *positions, C). ``conv``: None
        for a Linear (input (N, *positions, D)); for a conv (input (N, D, *positions)) an
        :class:`alignlab.nn.functional.ConvCall` (output positions, kernel, stride, padding,
        dilation, groups)."""
        raise NotImplementedError(f"{self.rule_name}: project() is for direct feedback (direct = True)")

    def direct_params(self) -> tuple:
        """Direct feedback only: the tensors that learn from the output error (direct ldfa's P
        and Q). They become inputs of the layer's autograd function (of the pass's collector under
        ``torch.compile``), which gives them the gradients :meth:`direct_grads` returns. The
        default: none."""
        return ()

    def direct_tensors(self, error_shape: torch.Size, x_shape: torch.Size, conv, like: Tensor) -> tuple:
        """Direct feedback only: other tensors :meth:`direct_grads` reads for a call with these
        shapes (dfa's B), built in the forward where the backward is traced (``torch.compile``:
        a traced backward cannot draw or cache them); ``like`` gives dtype and device. The default:
        none."""
        return ()

    def direct_grads(self, error: Tensor, x: Tensor | None, x_shape: torch.Size, conv, params: tuple,
                     tensors: tuple, need_x: bool, needs: tuple) -> tuple[Tensor | None, tuple]:
        """Direct feedback only: (the layer's input gradient, None unless ``need_x``; the gradients
        of ``params`` = :meth:`direct_params`, None where ``needs`` says False) from the output
        error, the layer's input ``x`` and ``tensors`` = :meth:`direct_tensors`. The default:
        (:meth:`project`, ())."""
        return (self.project(error, x_shape, conv) if need_x else None), ()

    def input_grad(self, grad: Tensor, x_shape: torch.Size, conv=None) -> Tensor:
        """Feedback with ``own_input_grad = True`` only: the layer's input gradient (shaped
        ``x_shape``) from the error ``grad`` at its output, computed by the feedback itself (an
        independent kernel at every conv position); ``conv`` as for :meth:`project`."""
        raise NotImplementedError(f"{self.rule_name}: input_grad() is for feedback with own_input_grad = True")

    def factors(self, weight: Tensor) -> tuple[Tensor, Tensor] | None:
        """(B, R) when the layer's error should go through B (N_out × m), then R (m rows, W's
        other dims; a grouped pfa conv: groups·m rows, one block per group), never through a
        stored B·R: the backward (:mod:`alignlab.nn.product`) takes, per call, whichever of
        δ·B·R and δ·(B·R) costs fewer multiply-adds, and gives R the gradient Bᵀ∇W either way.
        None (the default): use :meth:`matrix`. Only product feedback (pfa, ldfa) has factors."""
        return None

    def factor_grad(self, error: Tensor, h: Tensor | None, dim: int) -> Tensor | None:
        """The gradient of the first factor B of :meth:`factors`, where B learns (ldfa's Pᵀ:
        Oja's rule), from the layer's output error δ, its N_out units along ``dim`` (-1 for a
        Linear's rows, 1 for a conv's channels: every position is a sample), and h = δB (m units
        along ``dim``) where the backward formed it, else None; the default, None, is for a B
        that does not learn (pfa's)."""
        return None

    def extra_repr(self) -> str:
        shapes = [f"{n}={tuple(t.shape)}" for n, t in self.named_buffers(recurse=False) if t is not None]
        shapes += [f"{n}={tuple(t.shape)} (learned)" for n, t in self.named_parameters(recurse=False)]
        return ", ".join(shapes)


def _take_saved_shapes(module: Feedback, state_dict, prefix: str, *_) -> None:
    """Load-state-dict pre-hook: a saved feedback tensor of another shape (a resized model's)
    replaces ours, so that loading copies into a tensor of its shape."""
    own = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
    for name, tensor in own.items():
        saved = state_dict.get(prefix + name)
        if tensor is not None and isinstance(saved, Tensor) and saved.shape != tensor.shape:
            new = torch.empty(saved.shape, dtype=tensor.dtype, device=tensor.device)
            if isinstance(tensor, nn.Parameter):
                new = nn.Parameter(new, requires_grad=tensor.requires_grad)
            setattr(module, name, new)


@dataclass
class Rule:
    """Base of every rule's option dataclass. ``name`` is the registry key."""

    name: ClassVar[str] = ""
    direct: ClassVar[bool] = False  # its feedback sends the output error straight to each layer
    # options alignlab.testing's contract checks give this rule (where the defaults are slow
    # or too weak for their small nets and 150 steps)
    contract_options: ClassVar[dict] = {}
    # options under which every feedback tensor shaped like W, set to W, makes the feedback
    # exactly W (the contract's "feedback := W gives BP" check); None: the rule's defaults
    exact_options: ClassVar[dict | None] = None

    def feedback(self, weight: Tensor, groups: int = 1) -> Feedback:
        """Build the feedback module for one forward ``weight`` (at conversion time);
        ``groups`` is the conv layer's (1 for Linear and attention weights)."""
        raise NotImplementedError

    def converted(self, feedbacks: list[Feedback]) -> None:
        """Called by ``convert`` once it has built every feedback of this rule in a model, in layer
        order (before any optimizer is built); the default does nothing. Direct ldfa sizes its
        P to the last layer's outputs here."""

    def build(self, weight: Tensor, groups: int = 1, layer: str = "") -> Feedback:
        """The feedback for ``weight`` of the layer named ``layer``, carrying this rule's name
        (what ``convert`` calls; rules implement :meth:`feedback`)."""
        with torch.no_grad():
            feedback = self.feedback(weight, groups)
        feedback.rule_name, feedback.layer = self.name, layer
        return feedback

    @property
    def data_parallel_exact(self) -> bool:
        """True when averaging the updates of equal shards of a batch (what DDP does) gives
        exactly this rule's update on the whole batch. Rules whose feedback learns from batch
        statistics (ldfa's normalised Oja rule) say False; their ranks still agree."""
        return True

    def options(self) -> dict:
        return dataclasses.asdict(self)


def check_choice(rule: str, option: str, value, choices) -> None:
    """One-line ValueError when ``value`` is not one of ``choices`` (of the same type: 0 is not False)."""
    if not any(value == c and type(value) is type(c) for c in choices):
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"rule {rule!r}: {option}={value!r} is not valid; choose one of {valid}")


INITS = ("kaiming", "xavier")


@dataclass
class RandomInitRule(Rule):
    """A rule whose feedback starts from a random tensor shaped like W."""

    init: str = "kaiming"  # "kaiming" U(±1/√fan_in), as a fresh layer | "xavier" U(±√(6/(fan_in+fan_out)))

    def __post_init__(self) -> None:
        check_choice(self.name, "init", self.init, INITS)


def fan_in_out(weight: Tensor) -> tuple[int, int]:
    """Fan-in and fan-out of a Linear (out, in) or Conv (out, in/groups, *k) weight."""
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def init_bound(weight: Tensor, init: str) -> float:
    """a of the U(-a, a) that ``init`` names (see :func:`random_like`)."""
    fan_in, fan_out = fan_in_out(weight)
    return 1 / math.sqrt(fan_in) if init == "kaiming" else math.sqrt(6 / (fan_in + fan_out))


def random_like(weight: Tensor, init: str, generator: torch.Generator | None = None) -> Tensor:
    """A random tensor shaped like ``weight``, uniform in (-a, a), drawn on the CPU.

    ``kaiming``: a = 1/sqrt(fan_in), the distribution PyTorch gives a fresh nn.Linear or
    nn.ConvNd weight (kaiming_uniform with a=sqrt(5)); ``xavier``: a = sqrt(6/(fan_in+fan_out))
    (Glorot & Bengio 2010; BioTorch's choice).
    """
    bound = init_bound(weight, init)
    r = torch.rand(weight.shape, generator=generator, dtype=torch.float32)
    return ((2 * r - 1) * bound).to(device=weight.device, dtype=weight.dtype)


def grown(old: Tensor, new: Tensor) -> Tensor:
    """``new`` with the block it shares with ``old`` (the leading indices of every dim) copied
    from ``old``: a resized feedback tensor keeps its existing rows and columns."""
    block = tuple(slice(0, min(a, b)) for a, b in zip(old.shape, new.shape))
    new[block] = old[block].to(new.dtype)
    return new


def resized_warning(feedback: Feedback, old, new) -> None:
    """Learned feedback resized: the optimizer still holds the old tensors."""
    warnings.warn(f"{feedback.rule_name}: feedback of layer {feedback.layer!r} resized from {tuple(old)} to "
                  f"{tuple(new)}; build the optimizer again so that it holds the new learned feedback",
                  UserWarning, stacklevel=4)


def new_seed() -> int:
    """A seed drawn from torch's global RNG, so ``torch.manual_seed`` fixes every feedback tensor."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


class StepCache:
    """Holds a tensor derived from a weight until the weight changes.

    The key is the weight's storage and in-place version counter: an optimizer step, a
    ``load_state_dict`` or ``.to()`` all change it, so derived feedback (sign(W), the
    norm-matched B) is built once per step, not once per call.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Tensor | None = None

    def get(self, weight: Tensor, build) -> Tensor:
        key = weight_key(weight)
        if key != self.key:
            with torch.no_grad():
                self.value = build(weight.detach())
            self.key = key
        return self.value


# --- shared by the classic rules (fa, usf, frsf, brsf, kp) -----------------------------------

DRAWN_INITS = (*INITS, "normal")
BOOLS = (False, True)


def check_positive(rule: str, option: str, value) -> None:
    """One-line ValueError unless ``value`` is a positive number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"rule {rule!r}: {option}={value!r} is not valid; give a positive number")


def check_drawn_init(rule: str, init, std) -> None:
    """``init`` is one of :data:`DRAWN_INITS` and ``std`` a positive number."""
    check_choice(rule, "init", init, DRAWN_INITS)
    check_positive(rule, "std", std)


def draw_like(weight: Tensor, init: str, std: float, generator: torch.Generator | None = None) -> Tensor:
    """A random tensor shaped like ``weight``: :func:`random_like`'s U(-a, a) for ``"kaiming"``
    and ``"xavier"``; for ``"normal"``, N(0, std²) (Lance & Kieu 2026's B₀ = σ·randn), drawn on
    the CPU."""
    if init != "normal":
        return random_like(weight, init, generator)
    r = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
    return (r * std).to(device=weight.device, dtype=weight.dtype)


def weight_key(weight: Tensor) -> tuple:
    """Storage, in-place version, dtype and device of ``weight``: it changes when an optimizer
    step, a ``load_state_dict`` or ``.to()`` changes W. Tensor._version, the version counter
    autograd's own checks use, has no public equivalent; this is the one place alignlab reads a
    private torch attribute (stable since torch 0.4; tests/test_rules.py checks the rebuilds)."""
    return weight.data_ptr(), weight._version, weight.dtype, weight.device


# how autograd names a transpose of a parameter (transformers' Conv1D weight read as W.mT)
_VIEW_NODES = ("TransposeBackward0", "TBackward0", "PermuteBackward0")


def constrain_norm(feedback: Feedback, weight: Tensor) -> None:
    """``constrain_weights``: record ‖W‖_F, as ``weight`` has it now, in the buffer
    ``weight_norm``; :func:`hold_norm` then keeps W at that norm. Called at build (and at a
    resize, which records the resized weight's norm)."""
    with torch.no_grad():
        feedback.register_buffer("weight_norm", torch.linalg.vector_norm(weight.detach()).clone())
        # under torch.compile: the fingerprint of the W last rescaled (+1: none yet)
        feedback.register_buffer("norm_held_for", fingerprint(weight.detach()) + 1, persistent=False)
    feedback.holds_norm = True
    feedback._norm_key = None


def hold_norm(feedback: Feedback, weight: Tensor) -> None:
    """BioTorch's ``constrain_weights``: W ← W·‖W₀‖_F/‖W‖_F in place, under no_grad, the first
    time the feedback sees a new version of W (once per optimizer step), through
    :meth:`Feedback.prepare`, before the layer uses W in any forward, so autograd saves the
    rescaled W and evaluation sees it too. A weight computed in the forward (a parametrization)
    cannot be rescaled in place: a one-line error."""
    if torch.compiler.is_compiling():
        _hold_norm_traced(feedback, weight)
        return
    if weight_key(weight) == getattr(feedback, "_norm_key", None):
        return
    node = weight.grad_fn
    if node is not None and node.name() not in _VIEW_NODES:
        raise RuntimeError(f"{feedback.rule_name}: constrain_weights rescales the weight of layer {feedback.layer!r} "
                           "in place, but that weight is computed in the forward (a parametrization); "
                           "give constrain_weights=False")
    with torch.no_grad():
        current = torch.linalg.vector_norm(weight)
        factor = torch.where(current > 0, feedback.weight_norm.to(current.dtype) / current, torch.ones_like(current))
        weight.mul_(factor)
    feedback._norm_key = weight_key(weight)


def _hold_norm_traced(feedback: Feedback, weight: Tensor) -> None:
    """:func:`hold_norm` as a compiled graph runs it: a storage pointer and version counter
    cannot be traced, so W is rescaled where its exact fingerprint moved since the last
    rescale (the same steps eager takes: once per new W)."""
    with torch.no_grad():
        current = torch.linalg.vector_norm(weight)
        factor = torch.where(current > 0, feedback.weight_norm.to(current.dtype) / current, torch.ones_like(current))
        moved = (fingerprint(weight) != feedback.norm_held_for).reshape(())
        weight.mul_(torch.where(moved, factor, torch.ones_like(factor)))
        feedback.norm_held_for.copy_(fingerprint(weight))


def resize_norm(feedback: Feedback, weight: Tensor) -> None:
    """At a resize: a feedback that holds ‖W‖ (constrain_weights) holds the resized weight's."""
    if getattr(feedback, "weight_norm", None) is not None:
        constrain_norm(feedback, weight)


STEP_MIX = 0x9E3779B97F4A7C15 % 2**63  # spreads (seed, step) pairs over the seed space


_BITS_AS_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def fingerprint(weight: Tensor) -> Tensor:
    """Σ of W's entries' bit patterns as integers (int64, wrapping): one exact pass over W."""
    w = weight.detach()
    return w.view(_BITS_AS_INT[w.element_size()]).sum(dtype=torch.int64).reshape(1)
