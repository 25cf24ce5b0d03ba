"""Find the directory that holds a dataset's files.

Directories are searched in this order:

1. the ``data_dir`` argument, when given (then it is the only place looked at);
2. ``$ALIGNLAB_DATA/<name>``, then ``$ALIGNLAB_DATA`` itself;
3. the Debian location ``/usr/share/datasets/<name>``;
4. the user cache, ``$XDG_CACHE_HOME/alignlab/<name>``
   (``~/.cache/alignlab/<name>`` when ``XDG_CACHE_HOME`` is unset).

A directory matches when every required file is in it, either gzipped
(``<file>.gz``) or not.  Required files may be relative paths with folders
(CIFAR's ``cifar-10-batches-bin/data_batch_1.bin``), as its archive unpacks.

Downloads (see :mod:`alignlab.data.download`) go to :func:`download_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .errors import DatasetError

PathLike = str | os.PathLike[str]

ENV_VAR = "ALIGNLAB_DATA"
DEBIAN_ROOT = Path("/usr/share/datasets")

# How to get each known dataset, appended to the "not found" message.
_IDX_HINT = (
    "put the four {} IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in one of those directories, "
    "or load it with download=True"
)
_CIFAR_HINT = (
    "unpack {} into one of those directories (it holds the folder {}), "
    "or load it with download=True"
)
HOW_TO_GET: dict[str, str] = {
    "fashion-mnist": (
        "install it with `apt-get install dataset-fashion-mnist`, or put the four "
        "Fashion-MNIST IDX .gz files in one of those directories, or load it with download=True"
    ),
    "mnist": _IDX_HINT.format("MNIST"),
    "kmnist": _IDX_HINT.format("KMNIST"),
    "cifar10": _CIFAR_HINT.format("cifar-10-binary.tar.gz", "cifar-10-batches-bin"),
    "cifar100": _CIFAR_HINT.format("cifar-100-binary.tar.gz", "cifar-100-binary"),
}


def cache_dir() -> Path:
    """Return alignlab's per-user cache directory (it may not exist)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "alignlab"


def candidate_dirs(name: str, data_dir: PathLike | None = None) -> list[Path]:
    """Return the directories searched for dataset ``name``, in order."""
    if data_dir is not None:
        return [Path(data_dir)]
    dirs: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        dirs += [Path(env) / name, Path(env)]
    dirs += [DEBIAN_ROOT / name, cache_dir() / name]
    return dirs


def download_dir(name: str, data_dir: PathLike | None = None) -> Path:
    """Where a download of dataset ``name`` is stored.

    That is ``data_dir`` when one is given (the only place then searched, so
    the files must land there), else the user cache ``cache_dir() / name``.
    """
    return Path(data_dir) if data_dir is not None else cache_dir() / name


def find_file(directory: Path, filename: str) -> Path | None:
    """Return ``directory/filename.gz`` or ``directory/filename``, whichever exists."""
    for candidate in (directory / f"{filename}.gz", directory / filename):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, filenames: Sequence[str], data_dir: PathLike | None = None) -> Path:
    """Return the first candidate directory holding all of ``filenames``.

    Raises :class:`DatasetError` listing every place looked at, and what each
    lacked, when none matches.
    """
    problems: list[str] = []
    for directory in candidate_dirs(name, data_dir):
        missing = [f for f in filenames if find_file(directory, f) is None]
        if not missing:
            return directory
        problems.append(f"{directory} ({_describe_missing(directory, missing, filenames)})")
    hint = HOW_TO_GET.get(name, "put its files in one of those directories")
    raise DatasetError(
        f"dataset {name!r} not found: looked in {'; '.join(problems)}; {hint} "
        f"(or set ${ENV_VAR} or pass a data directory)"
    )


def _describe_missing(directory: Path, missing: list[str], filenames: Sequence[str]) -> str:
    if not directory.is_dir():
        return "no such directory"
    if len(missing) == len(filenames):
        return "none of its files"
    return "missing " + ", ".join(_usual_name(f) for f in missing)


def _usual_name(filename: str) -> str:
    """The name a required file usually has on disk: bare IDX names are gzipped."""
    return filename if "." in Path(filename).name else f"{filename}.gz"
