"""Learning rules: one module per rule, each registered by name.

Every module of this package is imported with it, so a rule is one new file here: a
:class:`Rule` dataclass decorated with :func:`register` and the :class:`Feedback` it builds
(``fa.py`` is the model to copy). A rule of your own outside the package registers the same
way when its module is imported. :mod:`alignlab.testing` checks any rule against the contract.

>>> import alignlab
>>> alignlab.rules.available()
['bp', 'brsf', 'dfa', 'fa', 'frsf', 'kp', 'ldfa', 'pfa', 'usf', 'wm']
"""

import importlib
import pkgutil

from .base import Feedback, Rule
from .registry import available, get, register

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")  # registers the rules it defines

__all__ = ["Feedback", "Rule", "available", "get", "register"]
