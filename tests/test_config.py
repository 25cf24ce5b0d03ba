"""Run configs: YAML + overrides, every key and type checked."""

import pytest

import alignlab
from alignlab.train.config import RunConfig, config_from_dict, load_config, to_dict


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rule: fa\nepochs: 3\nmodel:\n  name: lenet\n  norm: batch\noptim: {lr: 0.01}\n")
    cfg = load_config(path, ["optim.lr=0.1", "model.options.width=64", "rule_options.init=xavier",
                             "exclude=[head]", "data.data_dir=/tmp/x"])
    assert (cfg.rule, cfg.epochs, cfg.model.name, cfg.model.norm) == ("fa", 3, "lenet", "batch")
    assert cfg.optim.lr == 0.1 and isinstance(cfg.optim.lr, float)
    assert cfg.model.options == {"width": 64} and cfg.rule_options == {"init": "xavier"}
    assert cfg.exclude == ["head"] and cfg.data.data_dir == "/tmp/x"
    assert cfg.batch_size == RunConfig().batch_size  # untouched keys keep their defaults
    assert cfg.run_name() == "fashion-mnist-lenet-fa-s0"


def test_int_given_for_float_is_accepted():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


def test_exponent_without_a_dot_is_a_float():
    """YAML 1.1 (PyYAML) reads 1e-3 as a string; a float key takes it as the number."""
    cfg = load_config(None, ["optim.lr=1e-3", "optim.weight_decay=5E-4"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 5e-4 and isinstance(cfg.optim.lr, float)
    with pytest.raises(ValueError, match="config key 'optim.lr' must be float, got 'e-3'"):
        load_config(None, ["optim.lr=e-3"])


def test_exponent_without_a_dot_is_a_float_for_rule_options_too():
    cfg = load_config(None, ["rule=fa", "rule_options.init=normal", "rule_options.std=1e-3"])
    assert alignlab.rules.get(cfg.rule, **cfg.rule_options).std == 1e-3
    assert alignlab.rules.get("wm", mirror_lr="2E-2").mirror_lr == 0.02
    with pytest.raises(ValueError, match="rule 'dfa': scale='big' is not valid; give a positive number"):
        load_config(None, ["rule=dfa", "rule_options.scale=big"])
    with pytest.raises(ValueError, match="rank='2' is not valid"):  # only float options read text as numbers
        alignlab.rules.get("ldfa", rank="2")


def test_round_trip_through_dict():
    cfg = load_config(None, ["rule=kp", "model.options.depth=3"])
    assert config_from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown config key 'optim.lrr'; valid keys under 'optim': name, lr, momentum, weight_decay, schedule"),
    ("epoch=3", "unknown config key 'epoch'; valid keys at the top level: rule, rule_options"),
    ("epochs=three", "config key 'epochs' must be int, got 'three'"),
    ("epochs=1e3", "config key 'epochs' must be int, got '1e3'"),
    ("epochs=0", "config key 'epochs' must be >= 1, got 0"),
    ("progress=maybe", "config key 'progress' must be bool, got 'maybe'"),
    ("optim=adam", "config key 'optim' is a section"),
    ("optim.lr.x=1", "config key 'optim.lr' has no sub-keys"),
    ("rule=fb", f"unknown rule 'fb'; available rules: {', '.join(alignlab.rules.available())}"),
    ("rule_options.scale=2", "unknown option 'scale' for rule 'bp'; valid options: (none)"),
    ("optim.name=rmsprop", "config key 'optim.name': 'rmsprop' is not valid; choose one of sgd, adam, adamw"),
    ("optim.lr=-1", "config key 'optim.lr' must be > 0"),
    ("justtext", "override 'justtext' is not of the form key=value"),
])
def test_bad_overrides_name_the_key_and_the_valid_choices(override, message):
    with pytest.raises(ValueError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rule: [unclosed\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must hold a mapping, got list"):
        load_config(listy)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model:\n  nme: mlp\n")
    with pytest.raises(ValueError, match="unknown config key 'model.nme'; valid keys under 'model': name, norm, options"):
        load_config(unknown)


def test_layer_rules_map_patterns_to_rules_with_the_rule_as_default():
    cfg = load_config(None, ["model.name=lenet", "rule=fa", "rule_options.init=xavier",
                             "layer_rules={features.*: kp, classifier.2: {rule: dfa, scale: 2.0}}"])
    spec = cfg.rule_spec()
    assert list(spec) == ["features.*", "classifier.2", "*"]
    assert (spec["features.*"].name, spec["classifier.2"].scale, spec["*"].init) == ("kp", 2.0, "xavier")
    assert cfg.run_name() == "fashion-mnist-lenet-kp+dfa+fa-s0"
    assert config_from_dict(to_dict(cfg)).rule_spec() == spec


@pytest.mark.parametrize("value, message", [
    ("{x: nope}", "unknown rule 'nope'"),
    ("{x: 3}", "config key 'layer_rules': 3 is not valid; give a rule name or {rule: NAME, option: value}"),
    ("{x: {rule: fa, bogus: 1}}", "unknown option 'bogus' for rule 'fa'"),
])
def test_bad_layer_rules_are_one_line_errors(value, message):
    with pytest.raises(ValueError) as err:
        load_config(None, [f"layer_rules={value}"])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["[1, -0.5]", "[1, x]", "[true]"])
def test_bad_decay_schedule_is_a_one_line_error(value):
    with pytest.raises(ValueError) as err:
        load_config(None, [f"optim.decay_schedule={value}"])
    assert "config key 'optim.decay_schedule' must list numbers >= 0" in str(err.value)
    assert "\n" not in str(err.value)
