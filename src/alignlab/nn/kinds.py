"""The layer kinds that feedback can replace, in one table, and their twins.

A *kind* is a class whose forward is one linear map of its input (``nn.Linear``,
``nn.Conv1d/2d/3d``, ``nn.MultiheadAttention``'s projections, transformers' ``Conv1D``) together
with its *twin*: a subclass whose forward computes the same thing with the backward sent
through a feedback module. :func:`alignlab.convert` swaps a layer's class for its twin in
place, so parameters, buffers, hooks and optimizer references are kept.

* Subclasses of a kind convert too, through a twin made for them (``Feedback`` + the
  subclass's name, cached), provided they do not override ``forward``; a subclass that does is
  converted only once declared safe (:func:`register_layer` with ``like=``); transformers'
  ``FalconLinear`` is declared here, its forward being ``x Wᵀ + b``. Parametrized layers
  (``torch.nn.utils.parametrize``) are such subclasses: the twin reads the parametrized weight,
  and its gradient flows through the parametrization.
* transformers' ``Conv1D`` (y = x W + b, W stored as (in, out): GPT-2 and its family) is a
  built-in kind, looked up without importing transformers: a model that holds one has
  imported it already.
* :func:`register_layer` teaches convert a layer kind of the user's own.

Every twin names its original class (``_alignlab_base``), so :func:`alignlab.revert` can put a
layer back, and its kind (``_alignlab_kind``): which attribute holds the feedback and how to
read the weight in (out, in, *kernel) layout, the layout every rule builds its feedback for.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from .attention import FeedbackMultiheadAttention, convertible
from .conv import FeedbackConv1d, FeedbackConv2d, FeedbackConv3d
from .linear import FeedbackLinear, TransposedLinearMixin


@dataclass(frozen=True)
class Kind:
    """How one kind of layer is converted."""

    name: str  # shown by summary(): "Linear", "Conv2d", ...
    twin: type  # the twin of the kind's base class (a subclass of it)
    weight: Callable[[nn.Module], Tensor]  # the weight as (out, in, *kernel)
    slot: str = "feedback"  # attribute that holds the feedback module
    why_not: Callable[[nn.Module], str | None] = lambda m: None  # reason an instance stays on BP
    channels_first: bool = False  # inputs and outputs are (N, C, *positions) (convs)

    def groups(self, module: nn.Module) -> int:
        return getattr(module, "groups", 1)


def _weight(m: nn.Module) -> Tensor:
    return m.weight


def _twin(name: str, bases: tuple, base: type) -> type:
    """A twin class made at run time; it pickles by its original class (see _new_twin)."""
    return type(name, bases, {"_alignlab_base": base, "__module__": __name__, "__qualname__": name,
                              "__reduce_ex__": _reduce_twin})


def _reduce_twin(self, protocol):
    """Pickle (and deepcopy) a made twin as "the twin of its original class", which the
    loading process makes again (its original class must be importable there)."""
    return (_new_twin, (type(self)._alignlab_base,), *object.__reduce_ex__(self, protocol)[2:])


def _new_twin(base: type):
    _resolve_lazy()
    kind = _KINDS.get(base)
    twin = kind.twin if kind is not None and kind.twin._alignlab_base is base else _subclass_twin(base)
    return twin.__new__(twin)


def _subclass_twin(cls: type) -> type:
    """The (cached) twin of a subclass of a kind: Feedback<name>(the kind's twin, cls)."""
    if cls not in _TWINS:
        _TWINS[cls] = _twin(f"Feedback{cls.__name__}", (_KINDS[_base_of(cls)].twin, cls), cls)
    return _TWINS[cls]


def _builtin(base: type, twin: type, **fields) -> tuple[type, Kind]:
    kind = Kind(base.__name__, twin, fields.pop("weight", _weight), **fields)
    twin._alignlab_base, twin._alignlab_kind = base, kind
    return base, kind


_KINDS: dict[type, Kind] = dict([
    _builtin(nn.Linear, FeedbackLinear),
    _builtin(nn.Conv1d, FeedbackConv1d, channels_first=True),
    _builtin(nn.Conv2d, FeedbackConv2d, channels_first=True),
    _builtin(nn.Conv3d, FeedbackConv3d, channels_first=True),
    _builtin(nn.MultiheadAttention, FeedbackMultiheadAttention, slot="in_proj_feedback",
             weight=lambda m: m.in_proj_weight, why_not=convertible),
])

# Kinds of libraries that alignlab does not import: (module, class) -> maker of the Kind.
_LAZY_KINDS = {("transformers.pytorch_utils", "Conv1D"): lambda cls: Kind(
    "Conv1D", _twin("FeedbackConv1D", (TransposedLinearMixin, cls), cls), lambda m: m.weight.mT)}
# Subclasses that override forward with their base's computation (checked in the tests).
_LAZY_SAME_FORWARD = {("transformers.models.falcon.modeling_falcon", "FalconLinear")}
_SAME_FORWARD: set[type] = set()
_TWINS: dict[type, type] = {}


def _resolve_lazy() -> None:
    """Bring in the kinds and safe subclasses of libraries the process has imported."""
    for (module, name), make in list(_LAZY_KINDS.items()):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            kind = make(cls)
            kind.twin._alignlab_kind = kind
            _KINDS[cls] = kind
            del _LAZY_KINDS[(module, name)]
    for module, name in list(_LAZY_SAME_FORWARD):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            _SAME_FORWARD.add(cls)
            _LAZY_SAME_FORWARD.discard((module, name))


def _base_of(cls: type) -> type | None:
    """The first class of ``cls``'s MRO that is a kind."""
    return next((c for c in cls.__mro__ if c in _KINDS), None)


def _overrides_forward(cls: type, base: type) -> bool:
    """Whether a class between ``cls`` and ``base`` in the MRO defines its own forward."""
    for c in cls.__mro__:
        if c is base:
            return False
        if "forward" in vars(c) and c not in _SAME_FORWARD:
            return True
    return False


def kind_of(module: nn.Module) -> Kind | None:
    """The kind of a converted layer (None for any other module)."""
    return getattr(type(module), "_alignlab_kind", None)


def is_converted(module: nn.Module) -> bool:
    return kind_of(module) is not None


def layer_weight(module: nn.Module) -> Tensor:
    """A converted layer's weight in (out, in, *kernel) layout (what its feedback mirrors)."""
    return kind_of(module).weight(module)


def twin_of(module: nn.Module) -> tuple[type | None, str | None]:
    """(the twin class for ``module``, None) or (None, why it stays on BP); (None, None) when
    ``module`` is no layer kind at all. A twin's twin is itself (converting again swaps the rule)."""
    cls = type(module)
    if is_converted(module):
        return cls, None
    _resolve_lazy()
    base = _base_of(cls)
    if base is None:
        return None, None
    kind = _KINDS[base]
    if _overrides_forward(cls, base):
        return None, (f"{cls.__name__} overrides {base.__name__}.forward; if it computes the same, "
                      f"declare it with alignlab.register_layer({cls.__name__}, like={base.__name__})")
    if (reason := kind.why_not(module)) is not None:
        return None, reason
    return (kind.twin if cls is base else _subclass_twin(cls)), None


def register_layer(cls: type, like: type | None = None, *, forward: Callable | None = None,
                   weight: str | Callable[[nn.Module], Tensor] = "weight") -> None:
    """Teach :func:`alignlab.convert` a layer kind of your own.

    Either ``like=``: ``cls`` subclasses a supported layer (``nn.Linear``, ``nn.Conv2d``, ...)
    and its ``forward``, though overridden, computes exactly what the base class's does; or
    ``forward=``: a function ``forward(module, *args, **kwargs)`` that computes the layer through
    :func:`alignlab.nn.functional.feedback_linear` or ``feedback_conv`` with
    ``module.feedback``, plus ``weight``: the attribute name (or a function of the module)
    giving the weight in (out, in, *kernel) layout, from which each rule draws its feedback.

    >>> class Scaled(torch.nn.Module):      # y = x Wᵀ · s
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w, self.s = torch.nn.Parameter(torch.randn(3, 4)), 2.0
    ...     def forward(self, x):
    ...         return x @ self.w.T * self.s
    >>> alignlab.register_layer(Scaled, forward=lambda m, x: feedback_linear(x, m.w, None, m.feedback) * m.s,
    ...                         weight="w")
    """
    if (like is None) == (forward is None):
        raise ValueError("register_layer: give exactly one of like= (a supported base class) or forward=")
    if like is not None:
        if like not in _KINDS or not (isinstance(cls, type) and issubclass(cls, like)):
            valid = ", ".join(k.__name__ for k in _KINDS)
            raise ValueError(f"register_layer: {getattr(cls, '__name__', cls)!r} must subclass like= "
                             f"(one of {valid}); got like={getattr(like, '__name__', like)!r}")
        _SAME_FORWARD.add(cls)
        _TWINS.pop(cls, None)
        return
    read = weight if callable(weight) else (lambda m, attr=weight: getattr(m, attr))
    mixin = type(f"{cls.__name__}FeedbackForward", (), {"forward": forward})
    twin = _twin(f"Feedback{cls.__name__}", (mixin, cls), cls)
    kind = Kind(cls.__name__, twin, read)
    twin._alignlab_kind = kind
    _KINDS[cls] = kind


def holds_linear_weight(module: nn.Module) -> list[str]:
    """Names of the ≥2-D weights ``module`` holds itself (parameters or parametrized tensors
    whose name contains "weight"); embeddings, which are lookups, hold none."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return []
    names = [n for n, p in module.named_parameters(recurse=False) if "weight" in n and p.dim() >= 2]
    parametrized = getattr(module, "parametrizations", None)
    if isinstance(parametrized, nn.ModuleDict):
        names += [n for n, p in parametrized.items()
                  if "weight" in n and getattr(p, "original", None) is not None and p.original.dim() >= 2]
    return names
