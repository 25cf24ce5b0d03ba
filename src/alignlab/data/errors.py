"""The one error type raised by :mod:`alignlab.data`."""

from __future__ import annotations


class DatasetError(RuntimeError):
    """A dataset could not be found, read or validated.

    The message is always a single line that names the file or dataset,
    what was expected and what was found, so a command-line tool can print
    it as is instead of a traceback.
    """
