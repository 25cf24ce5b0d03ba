"""The contract every registered rule keeps (alignlab.testing), run on every rule.

A rule added to alignlab/rules/ gets every check here without editing this file.
"""

import pytest

import alignlab
from alignlab.testing import CHECKS, NotApplicable


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("rule", alignlab.rules.available())
def test_contract(rule, check):
    try:
        CHECKS[check](rule)
    except NotApplicable as why:
        pytest.skip(f"{rule}: {why}")
