"""Rules by name: ``register`` a rule class, ``get`` one with options checked."""

from __future__ import annotations

import dataclasses
import re
import typing

from .base import Rule

_RULES: dict[str, type[Rule]] = {}
EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-3, 2E5, .5e-2: what YAML 1.1 leaves a string


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name or cls.name in _RULES:
        raise ValueError(f"rule name {cls.name!r} is empty or already registered")
    _RULES[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of every registered rule, in registration order."""
    return list(_RULES)


def get(rule: str | Rule, **options) -> Rule:
    """A rule instance from a name and options (or an instance, returned as is).

    Unknown names and unknown options raise a one-line ValueError listing the valid ones.
    """
    if isinstance(rule, Rule):
        if options:
            raise ValueError("give options either in the Rule instance or as keywords, not both")
        return rule
    if rule not in _RULES:
        raise ValueError(f"unknown rule {rule!r}; available rules: {', '.join(_RULES)}")
    cls = _RULES[rule]
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key not in valid:
            listed = ", ".join(valid) if valid else "(none)"
            raise ValueError(f"unknown option {key!r} for rule {rule!r}; valid options: {listed}")
    return cls(**_floats(cls, options))


def _floats(cls: type[Rule], options: dict) -> dict:
    """``options`` with an exponent written without a dot (1e-3) given to a float option read as
    that number: YAML 1.1 (the config files, ``rule_options.std=1e-3`` on the command line) leaves
    it a string. Any other text stays text, for the rule to refuse."""
    if not any(isinstance(v, str) for v in options.values()):
        return options
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a user's rule whose annotations name what its module cannot resolve
        return options
    out = dict(options)
    for key, value in options.items():
        if hints.get(key) is float and isinstance(value, str) and EXPONENT.fullmatch(value.strip()):
            out[key] = float(value)
    return out
