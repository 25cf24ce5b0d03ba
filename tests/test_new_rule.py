"""A rule is one file: dropped into alignlab/rules/, it is registered and the contract runs on it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import alignlab
from alignlab.testing import CHECKS

PACKAGE = Path(alignlab.__file__).parent
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_rule() -> str:
    """The rule file shown in the README's "Adding a rule" section."""
    section = README.read_text().split("## Adding a rule", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]

HALF_FA = '''"""FA with B at half the scale of a fresh layer's weight (a rule written for this test)."""

from dataclasses import dataclass

from .base import RandomInitRule, random_like
from .fa import FixedFeedback
from .registry import register


@register
@dataclass
class HalfFA(RandomInitRule):
    name = "half_fa"

    def feedback(self, weight, groups=1):
        return FixedFeedback(0.5 * random_like(weight, self.init))
'''

UNSAVED = '''"""A rule whose B is a plain attribute, not a buffer: it is not in the state dict."""

from dataclasses import dataclass

from .base import Feedback, Rule, random_like
from .registry import register


class Unsaved(Feedback):
    def __init__(self, B):
        super().__init__()
        self.B = B

    def matrix(self, weight):
        return self.B


@register
@dataclass
class UnsavedRule(Rule):
    name = "unsaved"

    def feedback(self, weight, groups=1):
        return Unsaved(random_like(weight, "kaiming"))
'''


def _package_with(tmp_path: Path, files: dict[str, str]) -> Path:
    copy = tmp_path / "alignlab"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in files.items():
        (copy / "rules" / name).write_text(text)
    return tmp_path


def _run(root: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return _package_with(tmp_path_factory.mktemp("pkg"),
                         {"half_fa.py": HALF_FA, "unsaved.py": UNSAVED, "noisy.py": readme_rule()})


def test_a_dropped_in_rule_is_registered_and_passes_the_contract(root):
    code = ("import alignlab, alignlab.testing as t\n"
            f"assert alignlab.__file__.startswith({str(root)!r}), alignlab.__file__\n"
            "print(sorted(alignlab.rules.available()))\n"
            "print(t.check_rule('half_fa', ['trains_mlp', 'feedback_equal_to_weights_is_bp', 'state_dict_round_trip',"
            " 'transformer']))\n")
    out = _run(root, code)
    assert out.returncode == 0, out.stderr
    names, results = out.stdout.strip().splitlines()
    assert "'half_fa'" in names and "'fa'" in names
    assert results == ("{'trains_mlp': 'ok', 'feedback_equal_to_weights_is_bp': 'ok', 'state_dict_round_trip': 'ok', "
                       "'transformer': 'ok'}")


def test_the_contract_catches_feedback_left_out_of_the_state_dict(root):
    code = "import alignlab.testing as t\nt.check_rule('unsaved', ['state_dict_round_trip'])\n"
    out = _run(root, code)
    assert out.returncode != 0
    assert "AssertionError: state_dict_round_trip:" in out.stderr, out.stderr


def test_unknown_check_names_the_valid_ones():
    from alignlab.testing import check_rule

    with pytest.raises(ValueError, match="unknown checks \\['speed'\\]; valid: trains_mlp, trains_cnn"):
        check_rule("fa", ["speed"])


def test_the_readme_example_rule_passes_every_check(root):
    code = ("import alignlab, alignlab.testing as t\n"
            "print(t.check_rule('noisy'))\n"
            "print(t.check_rule(alignlab.rules.get('noisy', sigma=0.0), ['feedback_equal_to_weights_is_bp']))\n")
    out = _run(root, code)
    assert out.returncode == 0, out.stderr
    noisy, exact = (eval(line) for line in out.stdout.strip().splitlines()[-2:])
    assert set(noisy) == set(CHECKS)
    assert all(v == "ok" for k, v in noisy.items() if k != "feedback_equal_to_weights_is_bp"), noisy
    assert noisy["feedback_equal_to_weights_is_bp"].startswith("n/a")  # B = W + noise
    assert exact == {"feedback_equal_to_weights_is_bp": "ok"}  # σ = 0: B = W
