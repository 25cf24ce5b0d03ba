"""Read a whole data file, transparently un-gzipping it."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from .errors import DatasetError

GZIP_MAGIC = b"\x1f\x8b"


def read_maybe_gzip(path: Path, kind: str) -> bytearray:
    """Return the bytes of ``path``, decompressed if they are a gzip stream.

    Compression is recognised from the content, not the file name.  ``kind``
    names the expected file type in error messages (``"IDX"``, ``"CIFAR"``).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: expected a {kind} file, found no such file") from None
    except OSError as err:
        raise DatasetError(
            f"{path}: expected a readable {kind} file, found {reason(err)}"
        ) from None
    if not raw.startswith(GZIP_MAGIC):
        return bytearray(raw)
    try:
        return bytearray(gzip.decompress(raw))
    except EOFError:
        raise DatasetError(
            f"{path}: expected a complete gzip stream, found it truncated "
            f"after {len(raw)} compressed bytes"
        ) from None
    except (OSError, zlib.error) as err:
        raise DatasetError(
            f"{path}: expected a valid gzip stream, found corrupt data ({reason(err)})"
        ) from None


def reason(err: BaseException) -> str:
    """A short one-line description of an OS, network or compression error."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())
