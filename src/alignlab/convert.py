"""Turn any PyTorch model into one trained by a learning rule, and back.

``convert`` swaps the class of every layer that computes a linear map (the kinds of
:mod:`alignlab.nn.kinds`: ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.MultiheadAttention``,
transformers' ``Conv1D``, their subclasses that keep the base forward, parametrized ones, and
kinds given to :func:`register_layer`) for its feedback twin, in place, and gives it the rule's
feedback module. Parameters, buffers, hooks and any optimizer already holding them are
untouched; the forward pass computes exactly what it did.

Nothing is skipped silently: every other module that holds a ≥2-D weight (a parameter whose
name contains "weight"; embeddings, which are lookups, excepted) stays on BP and is named, with
the reason, in one ``UserWarning`` (``strict=True`` raises instead) and in :func:`summary`.
Modules named in ``exclude`` stay on BP without a warning, and layers converted earlier that
``exclude`` names are put back on BP; :func:`revert` puts every layer back.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from fnmatch import fnmatchcase
from typing import Iterable, Mapping

import torch
from torch import nn

from . import rules
from .nn.direct import OutputErrorTap, check_output
from .nn.kinds import holds_linear_weight, is_converted, kind_of, layer_weight, twin_of

log = logging.getLogger("alignlab")
EXCLUDED = "excluded"
UNMATCHED = "no pattern of the rule map matches it"


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or name.startswith(pattern + ".") or fnmatchcase(name, pattern)


def _check_patterns(model: nn.Module, patterns: Iterable[str], what: str) -> list[str]:
    """The patterns, each checked to match some module (a one-line ValueError otherwise)."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    names = [n for n, _ in model.named_modules()]
    for pattern in patterns:
        if not isinstance(pattern, str) or not any(_matches(n, pattern) for n in names):
            some = ", ".join(n for n in names[:9] if n) + (", ..." if len(names) > 9 else "")
            raise ValueError(f"{what} pattern {pattern!r} matches no module; module names: {some}")
    return patterns


def _rule_map(model: nn.Module, rule, options: dict) -> list[tuple[str | None, rules.Rule]]:
    """[(pattern, rule)] in order: one rule for every layer (pattern None), or a rule map."""
    if not isinstance(rule, Mapping):
        return [(None, rules.get(rule, **options))]
    if options:
        raise ValueError("with a rule map, give options in rule instances (alignlab.rules.get(name, **options)), "
                         "not as keywords")
    if not rule:
        raise ValueError("the rule map is empty; map module patterns to rules, e.g. {'*': 'fa'}")
    patterns = _check_patterns(model, list(rule), "rule map")
    return [(pattern, rules.get(rule[pattern])) for pattern in patterns]


def _rule_for(name: str, ruled: list[tuple[str | None, rules.Rule]]) -> rules.Rule | None:
    """The rule of the first pattern that matches layer ``name`` (None: no pattern does)."""
    return next((r for p, r in ruled if p is None or _matches(name, p)), None)


def _label(ruled: list[tuple[str | None, rules.Rule]]) -> str:
    """How messages name the rule: its name, or the rule map as pattern→rule pairs."""
    if ruled[0][0] is None:
        return ruled[0][1].name
    return "{" + ", ".join(f"{p}: {r.name}" for p, r in ruled) + "}"


def _plan(model: nn.Module, patterns: list[str], ruled: list[tuple[str | None, object]]):
    """(name, module, twin) of each layer to convert; (name, module) of each converted layer
    to put back on BP (excluded, or matched by no pattern of a rule map); (name, reason) of
    each linear map left on BP, excluded ones with the reason "excluded"."""
    targets, back, left, blocked = [], [], [], []
    for name, module in model.named_modules():
        if any(name.startswith(b + ".") for b in blocked):
            continue  # inside a module that stays on BP with everything in it
        if patterns and any(_matches(name, p) for p in patterns):
            back += [(n, m) for n, m in module.named_modules(prefix=name) if is_converted(m)]
            left += [(n, EXCLUDED) for n, m in module.named_modules(prefix=name)
                     if twin_of(m) != (None, None) or holds_linear_weight(m)]
            blocked.append(name)
            continue
        twin, why = twin_of(module)
        if twin is not None and _rule_for(name, ruled) is None:
            back += [(name, module)] if is_converted(module) else []
            left.append((name, UNMATCHED))
            blocked.append(name)  # attention's out_proj is read by torch's kernel, not called
        elif twin is not None:
            targets.append((name, module, twin))
        elif why is not None:
            left.append((name, why))
            blocked.append(name)  # e.g. attention's out_proj, read directly by torch's kernel
        elif weights := holds_linear_weight(module):
            left.append((name, f"{type(module).__name__} ({', '.join(weights)}) is no layer kind alignlab "
                               "converts; teach it with alignlab.register_layer"))
    return targets, back, left


def _swap(name: str, module: nn.Module, twin: type, rule: rules.Rule) -> None:
    """Give ``module`` its twin class and the rule's feedback."""
    module.__class__ = twin
    kind = kind_of(module)
    setattr(module, kind.slot, rule.build(kind.weight(module), groups=kind.groups(module), layer=name))


def _unswap(module: nn.Module) -> None:
    """Put a converted layer back on its original class, without its feedback."""
    delattr(module, kind_of(module).slot)
    module.__class__ = type(module)._alignlab_base


def _install_tap(model: nn.Module, output) -> None:
    """Direct rules read the output error through a tap on the root model."""
    old = getattr(model, "_alignlab_tap", None)
    if old is not None:
        old.remove()
        del model._alignlab_tap
    direct = [f for _, _, f in converted_layers(model) if f.direct]
    if direct:
        model._alignlab_tap = OutputErrorTap(model, output, direct[0].rule_name)
        for feedback in direct:
            feedback.tap = model._alignlab_tap


def _left_message(rule: str, left: list[tuple[str, str]]) -> str:
    listed = "; ".join(f"{n or '(root)'}: {why}" for n, why in left)
    return (f"alignlab.convert: {len(left)} module(s) holding linear-map weights stay on BP under rule "
            f"{rule!r} (exclude= them to accept that, strict=True to make it an error): {listed}")


def convert(model: nn.Module, rule: str | rules.Rule | Mapping[str, str | rules.Rule] = "fa", *, exclude: Iterable[str] = (),
            strict: bool = False, output=None, verbose: bool = False, **options) -> nn.Module:
    """Make ``model`` train by ``rule``, in place; return it.

    Args:
        model: any ``nn.Module``. Convert before building the optimizer: rules with learned
            feedback (``kp``, ``pfa``, ``ldfa``) add parameters.
        rule: a name from :func:`alignlab.rules.available` or a rule instance; or a *rule
            map* from module-name patterns (as ``exclude``'s) to rules, e.g.
            ``{"features.*": "kp", "classifier": "dfa", "*": "fa"}``: each layer trains by the
            rule of the first pattern that matches its name; layers no pattern matches stay on
            BP (converted ones go back) and are named in the warning and in :func:`summary`.
        exclude: module names (or glob patterns) to leave on BP, with everything inside them;
            layers that an earlier ``convert`` converted there go back on BP.
        strict: raise (before changing anything) instead of warning when a module that holds
            a linear-map weight would stay on BP.
        output: direct rules (``dfa``) only: where the model's output error is read when the
            model returns more than a tensor: a key, an index or a function of the output.
            Default: ``logits`` where present, else the first floating tensor whose first
            dimension is the batch (a scalar loss never).
        verbose: print :func:`summary` (the converted layers are always logged at INFO).
        **options: the rule's options (see its docstring), e.g. ``init="xavier"``; with a
            rule map, give options in rule instances instead.

    Raises:
        ValueError: unknown rule, option or option value; an exclude or rule-map pattern that
            matches no module; ``output`` given to a rule that is not direct; with ``strict``, layers left on BP.
    """
    ruled = _rule_map(model, rule, options)
    label = _label(ruled)
    patterns = _check_patterns(model, exclude, "exclude")
    check_output(output, label, any(r.direct for _, r in ruled))
    targets, back, left = _plan(model, patterns, ruled)
    unwanted = [(n, why) for n, why in left if why != EXCLUDED]
    if strict and unwanted:
        raise ValueError(_left_message(label, unwanted))
    for _, module in back:
        _unswap(module)
    for name, module, twin in targets:
        _swap(name, module, twin, _rule_for(name, ruled))
    built = {n: getattr(m, kind_of(m).slot) for n, m, _ in targets}
    for _, rule in ruled:
        rule.converted([fb for n, fb in built.items() if _rule_for(n, ruled) is rule])
    _install_tap(model, output)
    kinds = Counter(kind_of(m).name for _, m, _ in targets)
    log.info("convert: rule %s on %d layers (%s)%s", label, len(targets),
             ", ".join(f"{n} {k}" for k, n in kinds.items()), f"; {len(back)} put back on BP" if back else "")
    model._alignlab_exclude = tuple(patterns)  # summary() shows them
    model._alignlab_rule_patterns = tuple(p for p, _ in ruled if p is not None)
    if unwanted:
        warnings.warn(_left_message(label, unwanted), UserWarning, stacklevel=2)
    if verbose:
        print(summary(model))
    return model


def revert(model: nn.Module) -> nn.Module:
    """Put every converted layer of ``model`` back on its original class, in place; the
    state dict then holds no feedback keys. Returns the model."""
    for _, module, _ in converted_layers(model):
        _unswap(module)
    _install_tap(model, None)
    model._alignlab_rule_patterns = ()
    return model


def converted_layers(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """(name, layer, feedback) for every converted layer of ``model``."""
    return [(n, m, getattr(m, kind_of(m).slot)) for n, m in model.named_modules() if is_converted(m)]


def summary(model: nn.Module) -> str:
    """A table of the layers that compute linear maps: name, layer type, weight shape (out ×
    in × kernel), the rule it trains by ("bp" for those left on BP) and why a layer stays on BP."""
    rows = [("layer", "type", "weight", "rule", "note")]
    ruled = [(p, True) for p in getattr(model, "_alignlab_rule_patterns", ())] or [(None, True)]  # matched or not
    _, _, left = _plan(model, list(getattr(model, "_alignlab_exclude", ())), ruled)
    why = dict(left)
    for name, module in model.named_modules():
        if is_converted(module):
            feedback = getattr(module, kind_of(module).slot)
            rows.append((name, kind_of(module).name, _shape(layer_weight(module)), feedback.rule_name, ""))
        elif name in why or twin_of(module)[0] is not None:
            weights = holds_linear_weight(module)
            shape = _shape(getattr(module, weights[0])) if weights else "-"
            rows.append((name, type(module).__name__, shape, "bp", why.get(name, "not converted (added after convert?)")))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape))
