"""Learning rules: one module per rule, each registered by name.

>>> import alignlab
>>> alignlab.rules.available()
['bp', 'fa', 'dfa', 'usf', 'brsf', 'frsf', 'kp']
"""

from . import bp, fa, dfa, usf, brsf, frsf, kp  # noqa: F401  (registers each rule)
from . import ldfa  # noqa: F401
from . import pfa  # noqa: F401
from .base import Feedback, Rule
from .registry import available, get, register

__all__ = ["Feedback", "Rule", "available", "get", "register"]
