"""Typed run configuration: YAML files plus ``key=value`` overrides, checked key by key.

A config is a :class:`RunConfig` of nested dataclasses. ``load_config(path, overrides)``
starts from the defaults below, applies the YAML file, then each ``a.b=value`` override
(values parsed as YAML: ``0.1``, ``true``, ``[1, 2]``). An unknown key, or a value of the
wrong type, is a one-line ``ValueError`` naming the key and listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..rules.registry import EXPONENT  # YAML 1.1 leaves 1e-3 (no dot) a string


@dataclass
class DataConfig:
    name: str = "fashion-mnist"  # alignlab.data.names()
    data_dir: str | None = None  # look only here (default: $ALIGNLAB_DATA, Debian dir, user cache)
    download: bool = True  # fetch it (SHA-256 checked) when it is not found
    augment: bool = False  # random crop (pad 4) + horizontal flip of training batches
    train_subset: int = 0  # train on the first N training samples only (0: all); the test set stays whole
    options: dict = field(default_factory=dict)  # synthetic datasets' options (teacher: d_in, d_out, ...)


@dataclass
class ModelConfig:
    name: str = "mlp"  # alignlab.models.names()
    norm: str | None = None  # hidden activity normalization: none | batch | layer | rms (None: the model's default)
    options: dict = field(default_factory=dict)  # the model's own options (mlp: depth, width, ...)


@dataclass
class OptimConfig:
    name: str = "adam"  # sgd | adam | adamw | muon (Muon for hidden matrices and kernels, AdamW for the rest)
    lr: float = 1e-3  # learning rate
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # decoupled for adamw and muon, L2 for sgd and adam
    schedule: str = "none"  # none | cosine (to 0 over all epochs, stepped once per batch)
    # per-epoch multipliers of weight_decay, epoch 1 first, the last one holding after the list
    # ends (the PFA authors' regime: a large decay in epoch 1, then ×0.02: [1, 0.02]); [] = constant
    decay_schedule: list = field(default_factory=list)


@dataclass
class DiagnosticsConfig:
    enabled: bool = True  # angles to BP and ranks of signals, logged to diagnostics.jsonl
    every: int = 0  # steps between measurements; 0: at the end of each epoch (always at step 0)
    probe_size: int = 256  # the first training samples, measured every time


@dataclass
class RunConfig:
    rule: str = "bp"  # alignlab.rules.available()
    rule_options: dict = field(default_factory=dict)  # the rule's options, e.g. {init: xavier}
    # per-layer rules: module pattern → rule name or {rule: NAME, option: value, ...}; a layer
    # trains by the first pattern that matches it, every other layer by `rule`
    layer_rules: dict = field(default_factory=dict)
    exclude: list = field(default_factory=list)  # module names left on BP
    seed: int = 0  # weights, feedback, data order and augmentation all follow it
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    eval_every: int = 1  # test-set pass after every N-th epoch and after the last (the others log no test metrics)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    out_dir: str = "runs"  # runs are written to out_dir/name
    name: str = ""  # default: <dataset>-<model>-<rule>-s<seed>
    progress: bool = True  # tqdm progress bar on stderr
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + GradScaler)
    compile: bool = False  # torch.compile the model
    # 4-D weights, feedback kernels and image batches in NHWC memory order: the same numbers,
    # faster convs and pools (oneDNN on CPU; tensor cores on GPU); arch1 on CPU: eval ~0.75x time
    channels_last: bool = False
    ddp_timeout: float = 300.0  # seconds a torchrun process waits for the others in a collective, then fails

    def run_name(self) -> str:
        return self.name or f"{self.data.name}-{self.model.name}-{self.rule_label()}-s{self.seed}"

    def rule_label(self) -> str:
        """``rule``, or with per-layer rules every rule used, the default last: ``kp+dfa+fa``."""
        names = [_layer_rule(value)[0] for value in self.layer_rules.values()] + [self.rule]
        return "+".join(dict.fromkeys(str(n) for n in names))

    def rule_spec(self):
        """What ``alignlab.convert`` is given: the rule, or the rule map ending with ``"*": rule``."""
        from .. import rules

        default = rules.get(self.rule, **self.rule_options)
        if not self.layer_rules:
            return default
        spec = {pattern: rules.get(name, **options)
                for pattern, (name, options) in ((p, _layer_rule(v)) for p, v in self.layer_rules.items())}
        spec.setdefault("*", default)
        return spec


def _layer_rule(value) -> tuple[str, dict]:
    """(rule name, options) of a ``layer_rules`` entry: a name or {rule: NAME, **options}."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("rule"), str):
        return value["rule"], {k: v for k, v in value.items() if k != "rule"}
    raise ValueError(f"config key 'layer_rules': {value!r} is not valid; give a rule name or {{rule: NAME, option: value}}")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_value(key: str, value, kind) -> Any:
    """``value`` converted to the field type ``kind``, or a ValueError naming ``key``."""
    if dataclasses.is_dataclass(kind):
        raise ValueError(f"config key {key!r} is a section; set its keys, e.g. {key}.name=...")
    if isinstance(kind, types.UnionType):  # X | None
        if value is None:
            return None
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and EXPONENT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise ValueError(f"config key {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _apply(cfg, key_path: list[str], value, prefix: str = "") -> None:
    """Set ``cfg.<key_path>`` = value, checking each key against the dataclass fields."""
    head, rest = key_path[0], key_path[1:]
    full = prefix + head
    kinds = _field_types(type(cfg))
    if head not in kinds:
        where = f"under {prefix[:-1]!r}" if prefix else "at the top level"
        raise ValueError(f"unknown config key {full!r}; valid keys {where}: {', '.join(kinds)}")
    kind = kinds[head]
    if dataclasses.is_dataclass(kind):
        if rest:
            return _apply(getattr(cfg, head), rest, value, full + ".")
        if not isinstance(value, dict):
            raise ValueError(f"config key {full!r} is a section; give a mapping or set {full}.<key>")
        for k, v in value.items():
            _apply(getattr(cfg, head), [str(k)], v, full + ".")
        return
    if rest:
        if kind is not dict:
            raise ValueError(f"config key {full!r} has no sub-keys")
        nested = getattr(cfg, head)
        for k in rest[:-1]:
            nested = nested.setdefault(k, {})
        nested[rest[-1]] = value
        return
    setattr(cfg, head, _check_value(full, value, kind))


def apply_mapping(cfg: RunConfig, mapping: dict) -> RunConfig:
    for key, value in mapping.items():
        _apply(cfg, [str(key)], value)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.1"`` → (["optim", "lr"], 0.1)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, all checked."""
    cfg = RunConfig()
    if path is not None:
        apply_mapping(cfg, read_yaml(path))
    for text in overrides:
        keys, value = parse_override(text)
        _apply(cfg, keys, value)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    from .. import rules

    for key, value in (("epochs", cfg.epochs), ("batch_size", cfg.batch_size),
                       ("eval_batch_size", cfg.eval_batch_size), ("eval_every", cfg.eval_every),
                       ("diagnostics.probe_size", cfg.diagnostics.probe_size)):
        if value < 1:
            raise ValueError(f"config key {key!r} must be >= 1, got {value}")
    if cfg.diagnostics.every < 0:
        raise ValueError(f"config key 'diagnostics.every' must be >= 0, got {cfg.diagnostics.every}")
    if cfg.optim.lr <= 0:
        raise ValueError(f"config key 'optim.lr' must be > 0, got {cfg.optim.lr}")
    bad = [m for m in cfg.optim.decay_schedule if isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0]
    if bad:
        raise ValueError(f"config key 'optim.decay_schedule' must list numbers >= 0, got {cfg.optim.decay_schedule!r}")
    cfg.rule_spec()  # unknown rule, option or layer_rules entry: ValueError listing the valid ones
    from ..optim import OPTIMIZERS, SCHEDULES

    from .placement import PRECISIONS

    for key, value, valid in (("optim.name", cfg.optim.name, OPTIMIZERS), ("optim.schedule", cfg.optim.schedule, SCHEDULES),
                              ("precision", cfg.precision, tuple(PRECISIONS))):
        if value not in valid:
            raise ValueError(f"config key {key!r}: {value!r} is not valid; choose one of {', '.join(valid)}")


def config_from_dict(mapping: dict) -> RunConfig:
    """A RunConfig from a saved ``config.yaml`` mapping (checked like a file)."""
    cfg = apply_mapping(RunConfig(), mapping)
    validate(cfg)
    return cfg
