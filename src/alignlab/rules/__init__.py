"""Learning rules: one module per rule, each registered by name.

>>> import alignlab
>>> alignlab.rules.available()
['bp', 'fa', 'dfa', 'usf', 'brsf', 'frsf', 'kp', 'ldfa', 'pfa']
"""

from . import bp, fa, dfa, usf, brsf, frsf, kp, ldfa, pfa  # noqa: F401  (registers each rule)
from .base import Feedback, Rule
from .registry import available, get, register

__all__ = ["Feedback", "Rule", "available", "get", "register"]
