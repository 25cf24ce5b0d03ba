"""CKA of each rule's trained network against BP's, layer by layer, as a compare run writes it.

A compare folder (the parent of its run directories, where the report goes) may hold
``cka.json``::

    {"probe": "<how the probe batch was drawn>", "debiased": true,
     "values": {"<model>": {"<rule>": {"<layer>": 0.93, ...}, ...}, ...}}

one value per layer of each rule's net against BP's net of the same model and seed, averaged
over seeds. Layers are in network order (the order of the keys).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CKA_FILE = "cka.json"


@dataclass(frozen=True)
class ModelCka:
    """The CKA values of one model: ``values[rule][layer]``, plus how they were measured."""

    values: dict[str, dict[str, float]]
    probe: str | None = None
    debiased: bool | None = None

    @property
    def layers(self) -> list[str]:
        """Every layer of any rule, in the order first seen."""
        return list(dict.fromkeys(layer for per_layer in self.values.values() for layer in per_layer))

    def rules(self, preferred: list[str]) -> list[str]:
        """The rules with values: those in ``preferred`` in its order, then the others as stored."""
        return ([rule for rule in preferred if rule in self.values]
                + [rule for rule in self.values if rule not in preferred])

    def grid(self, preferred: list[str]) -> tuple[list[str], list[str], list[list[float]]]:
        """``(rules, layers, matrix)`` with ``matrix[i][j]`` the value of rule i, layer j (NaN if none)."""
        rules, layers = self.rules(preferred), self.layers
        matrix = [[self.values[rule].get(layer, math.nan) for layer in layers] for rule in rules]
        return rules, layers, matrix

    def describe(self) -> str:
        """``debiased linear CKA, probe: ...`` as far as known."""
        kind = {True: "debiased CKA", False: "CKA", None: "CKA"}[self.debiased]
        return f"{kind}, probe: {self.probe}" if self.probe else kind


def parse_cka(data: Any) -> dict[str, ModelCka]:
    """``{model: ModelCka}`` from ``cka.json``'s content; a ValueError when it has no ``values`` mapping.

    Models, rules and layers whose entries are not mappings or numbers are left out, and so
    are models left with no value. An empty mapping means no values.
    """
    if isinstance(data, dict) and not data:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
        raise ValueError('not a CKA table: expected {"values": {model: {rule: {layer: number}}}}')
    probe = data.get("probe")
    probe = None if probe in (None, "") else str(probe)
    debiased = data.get("debiased") if isinstance(data.get("debiased"), bool) else None
    models: dict[str, ModelCka] = {}
    for model, per_rule in data["values"].items():
        if not isinstance(per_rule, dict):
            continue
        values: dict[str, dict[str, float]] = {}
        for rule, per_layer in per_rule.items():
            if not isinstance(per_layer, dict):
                continue
            numbers = {str(layer): float(value) for layer, value in per_layer.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)}
            if numbers:
                values[str(rule)] = numbers
        if values:
            models[str(model)] = ModelCka(values, probe, debiased)
    return models


def read_cka(path: Path) -> dict[str, ModelCka]:
    """`parse_cka` of the file; ``{}`` when it is missing, with a warning when it is unreadable."""
    if not path.is_file():
        return {}
    try:
        return parse_cka(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        reason = " ".join(str(error).split())
        warnings.warn(f"{path}: ignoring an unreadable CKA file ({reason})", stacklevel=3)
        return {}
