"""Read and write the IDX format used by MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then
``ndim`` big-endian uint32 dimension sizes, then the elements in row-major
order, each stored big-endian.  Files may be gzip-compressed; the reader
recognises compression from the content, not from the file name.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
from math import prod
from pathlib import Path

import torch

from .errors import DatasetError
from .rawfile import read_maybe_gzip

PathLike = str | os.PathLike[str]

# IDX type code -> torch dtype.  All multi-byte types are big-endian on disk.
IDX_DTYPES: dict[int, torch.dtype] = {
    0x08: torch.uint8,
    0x09: torch.int8,
    0x0B: torch.int16,
    0x0C: torch.int32,
    0x0D: torch.float32,
    0x0E: torch.float64,
}
IDX_CODES: dict[torch.dtype, int] = {dtype: code for code, dtype in IDX_DTYPES.items()}


def read_idx(path: PathLike) -> torch.Tensor:
    """Return the contents of the IDX file at ``path`` as a tensor.

    Raises :class:`DatasetError` if the file is missing, unreadable, a
    corrupt or truncated gzip stream, has a bad magic number, or its
    payload is not exactly as long as its header says.
    """
    path = Path(path)
    data = read_maybe_gzip(path, "IDX")
    dtype, shape, offset = _parse_header(path, data)
    _check_payload_length(path, data, dtype, shape, offset)
    return _decode(data, dtype, shape, offset)


def write_idx(path: PathLike, tensor: torch.Tensor) -> None:
    """Write ``tensor`` to ``path`` in IDX format, gzipped if the name ends in ``.gz``."""
    path = Path(path)
    if tensor.dtype not in IDX_CODES:
        supported = ", ".join(str(d) for d in IDX_CODES)
        raise ValueError(f"write_idx: dtype {tensor.dtype} is not one of {supported}")
    header = bytes([0, 0, IDX_CODES[tensor.dtype], tensor.dim()])
    header += struct.pack(f">{tensor.dim()}I", *tensor.shape)
    blob = header + _encode(tensor)
    if path.name.endswith(".gz"):
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def _parse_header(path: Path, data: bytearray) -> tuple[torch.dtype, tuple[int, ...], int]:
    """Return the dtype, shape and payload offset described by the header."""
    if len(data) < 4:
        raise DatasetError(f"{path}: expected a 4-byte IDX magic number, found {len(data)} bytes")
    zero_a, zero_b, code, ndim = data[:4]
    if zero_a != 0 or zero_b != 0:
        raise DatasetError(
            f"{path}: expected an IDX magic number starting 0x0000, "
            f"found 0x{bytes(data[:4]).hex()}"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DatasetError(f"{path}: expected an IDX type code in ({known}), found 0x{code:02x}")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DatasetError(
            f"{path}: expected a {offset}-byte header for {ndim} dimensions, "
            f"found {len(data)} bytes"
        )
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    return IDX_DTYPES[code], shape, offset


def _check_payload_length(
    path: Path, data: bytearray, dtype: torch.dtype, shape: tuple[int, ...], offset: int
) -> None:
    """Raise unless the bytes after the header are exactly the declared payload."""
    expected = prod(shape) * dtype.itemsize
    found = len(data) - offset
    if found != expected:
        dims = "x".join(str(d) for d in shape) or "scalar"
        raise DatasetError(
            f"{path}: expected {expected} payload bytes for a {dims} {_dtype_name(dtype)} "
            f"array, found {found}"
        )


def _decode(
    data: bytearray, dtype: torch.dtype, shape: tuple[int, ...], offset: int
) -> torch.Tensor:
    """Turn the payload into a tensor in native byte order."""
    count = prod(shape)
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    size = dtype.itemsize
    raw = torch.frombuffer(data, dtype=torch.uint8, count=count * size, offset=offset)
    if size > 1 and sys.byteorder == "little":
        raw = raw.view(count, size).flip(1).contiguous()
    return raw.view(dtype).view(shape)


def _encode(tensor: torch.Tensor) -> bytes:
    """Return the elements of ``tensor`` as big-endian bytes."""
    size = tensor.dtype.itemsize
    raw = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8)
    if size > 1 and sys.byteorder == "little":
        raw = raw.view(-1, size).flip(1).reshape(-1)
    out = bytearray(raw.numel())
    if out:
        torch.frombuffer(out, dtype=torch.uint8).copy_(raw)
    return bytes(out)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
