"""Turn any PyTorch model into one trained by a learning rule.

``convert`` swaps the class of every eligible layer in place (``nn.Linear``, ``nn.Conv1d/2d/3d``
and ``nn.MultiheadAttention``) for its feedback twin in :mod:`alignlab.nn` and gives it the
rule's feedback module. Parameters, buffers, hooks and any optimizer already holding them
are untouched; the forward pass computes exactly what it did. Norm layers, embeddings and
everything else stay on BP.
"""

from __future__ import annotations

import logging
from collections import Counter
from fnmatch import fnmatchcase
from typing import Iterable

from torch import nn

from . import rules
from .nn import FeedbackConv1d, FeedbackConv2d, FeedbackConv3d, FeedbackLinear, FeedbackMultiheadAttention
from .nn.attention import convertible
from .nn.direct import OutputErrorTap

log = logging.getLogger("alignlab")

_TWINS: dict[type, type] = {
    nn.Linear: FeedbackLinear,
    nn.modules.linear.NonDynamicallyQuantizableLinear: FeedbackLinear,
    nn.Conv1d: FeedbackConv1d,
    nn.Conv2d: FeedbackConv2d,
    nn.Conv3d: FeedbackConv3d,
    nn.MultiheadAttention: FeedbackMultiheadAttention,
}
_TWINS.update({twin: twin for twin in set(_TWINS.values())})  # converting again swaps the rule


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.startswith(pattern + ".") or fnmatchcase(name, pattern)


def _check_exclude(model: nn.Module, exclude: Iterable[str]) -> list[str]:
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    names = [n for n, _ in model.named_modules() if n]
    for pattern in patterns:
        if not isinstance(pattern, str) or not any(_matches(n, pattern) for n in names):
            some = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ValueError(f"exclude pattern {pattern!r} matches no module; module names: {some}")
    return patterns


def _targets(model: nn.Module, patterns: list[str]):
    """(name, module) of each layer to convert, and (name, reason) of each one skipped."""
    targets, skipped, blocked = [], [], []
    for name, module in model.named_modules():
        if type(module) not in _TWINS or any(name.startswith(b + ".") for b in blocked):
            continue
        if any(_matches(name, p) for p in patterns):
            skipped.append((name, "excluded"))
            continue
        if isinstance(module, nn.MultiheadAttention) and (reason := convertible(module)):
            skipped.append((name, reason))
            blocked.append(name)  # its out_proj is read directly by torch's kernel
            continue
        targets.append((name, module))
    return targets, skipped


def _swap(module: nn.Module, rule: rules.Rule) -> nn.Module:
    """Give ``module`` its feedback class and the rule's feedback; return the feedback."""
    module.__class__ = _TWINS[type(module)]
    attr, weight = ("in_proj_feedback", module.in_proj_weight) if isinstance(
        module, nn.MultiheadAttention) else ("feedback", module.weight)
    feedback = rule.feedback(weight, groups=getattr(module, "groups", 1))
    feedback.rule_name = rule.name
    setattr(module, attr, feedback)
    return feedback


def _install_tap(model: nn.Module, feedbacks: list) -> None:
    """Direct rules read the output error through a tap on the root model."""
    old = getattr(model, "_alignlab_tap", None)
    if old is not None:
        old.remove()
        del model._alignlab_tap
    direct = [f for f in feedbacks if f.direct]
    if direct:
        model._alignlab_tap = OutputErrorTap(model)
        for feedback in direct:
            feedback.tap = model._alignlab_tap


def convert(model: nn.Module, rule: str | rules.Rule = "fa", *, exclude: Iterable[str] = (),
            verbose: bool = False, **options) -> nn.Module:
    """Make ``model`` train by ``rule``, in place; return it.

    Args:
        model: any ``nn.Module``. Convert before building the optimizer: rules with learned
            feedback (``kp``) add parameters.
        rule: a name from :func:`alignlab.rules.available` or a rule instance.
        exclude: module names (or glob patterns) to leave on BP, with everything inside them.
        verbose: print the table of converted layers (it is always logged at INFO).
        **options: the rule's options (see its docstring), e.g. ``init="xavier"``.

    Raises:
        ValueError: unknown rule, option or option value, or an exclude pattern that matches
            no module.
    """
    rule = rules.get(rule, **options)
    patterns = _check_exclude(model, exclude)
    targets, skipped = _targets(model, patterns)
    feedbacks = [_swap(module, rule) for _, module in targets]
    _install_tap(model, feedbacks)
    kinds = Counter(type(m).__name__.removeprefix("Feedback") for _, m in targets)
    log.info("convert: rule %r on %d layers (%s)%s", rule.name, len(targets),
             ", ".join(f"{n} {k}" for k, n in kinds.items()),
             "".join(f"; left on BP: {n} ({why})" for n, why in skipped))
    if verbose:
        print(summary(model))
    return model


def converted_layers(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """(name, layer, feedback) for every converted layer of ``model``."""
    out = []
    for name, module in model.named_modules():
        for attr in ("feedback", "in_proj_feedback"):
            feedback = getattr(module, attr, None)
            if isinstance(feedback, rules.Feedback):
                out.append((name, module, feedback))
    return out


def summary(model: nn.Module) -> str:
    """A table of the converted layers: name, layer type, weight shape, rule."""
    rows = [("layer", "type", "weight", "rule")]
    for name, module, feedback in converted_layers(model):
        weight = module.in_proj_weight if isinstance(module, nn.MultiheadAttention) else module.weight
        kind = type(module).__name__.removeprefix("Feedback")
        rows.append((name, kind, "x".join(map(str, weight.shape)), feedback.rule_name))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
