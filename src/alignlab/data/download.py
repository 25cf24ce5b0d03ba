"""Download a dataset's files, verify their SHA-256 and unpack archives.

Every file is streamed into a temporary file next to its final name, hashed
on the way, and renamed into place only when its digest matches the
published one (:mod:`alignlab.data.sources`); on a mismatch the temporary
file is deleted.  A file whose digest is unknown is never downloaded.  An IDX
file already at its final name is used as it is; an archive already there
(put by hand) is verified before it is unpacked.  Archives are unpacked into
a staging folder, refusing absolute paths, ``..`` and anything but plain
files and folders, then moved into place file by file (nothing else is
deleted).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from .errors import DatasetError
from .rawfile import reason
from .sources import SOURCES, Remote, Source

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 60.0


def download_dataset(name: str, directory: Path) -> None:
    """Fetch (and unpack) every file of dataset ``name`` into ``directory``."""
    source = SOURCES[name]
    hint = manual_hint(source, directory)
    directory.mkdir(parents=True, exist_ok=True)
    for remote in source.files:
        path = directory / remote.filename
        if path.is_file():
            log.info("using %s already on disk", path)
            if source.archives:
                _check_digest(remote, sha256_file(path), path.stat().st_size, path)
            fresh = False
        else:
            download(remote, path, hint)
            fresh = True
        if source.archives:
            extract_tar(path, directory, delete_on_failure=fresh)
            if fresh:
                path.unlink()


def manual_hint(source: Source, directory: Path) -> str:
    """One sentence telling how to install ``source`` by hand into ``directory``."""
    names = ", ".join(r.filename for r in source.files)
    origin = source.files[0].url.rsplit("/", 1)[0] + "/"
    if source.archives:
        return f"to install it by hand, download {names} from {origin} and unpack it in {directory}"
    return f"to install it by hand, download {names} from {origin} into {directory}"


def download(remote: Remote, path: Path, hint: str) -> None:
    """Download ``remote`` to ``path`` through a verified temporary file."""
    if remote.sha256 is None:
        raise DatasetError(
            f"{remote.url}: no published SHA-256 is known for this file, so alignlab "
            f"will not download it unverified; {hint}"
        )
    log.info("downloading %s", remote.url)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _copy(remote.url, out, hint)
        _check_digest(remote, digest, size)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def extract_tar(archive: Path, directory: Path, delete_on_failure: bool = False) -> None:
    """Safely unpack the .tar.gz ``archive`` into ``directory``.

    Raises :class:`DatasetError` for a truncated or corrupt archive (deleting
    it first when ``delete_on_failure``) and for unsafe members.
    """
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".unpack-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            tar.extractall(staging, members=members, **_EXTRACT_OPTIONS)
        _merge_into(staging, directory)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        if delete_on_failure:
            archive.unlink(missing_ok=True)
        raise DatasetError(
            f"{archive}: expected a complete .tar.gz archive, could not unpack it ({reason(err)})"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# Python >= 3.11.4 / 3.12 can also filter members itself; members are checked
# by _check_member in any case.
_EXTRACT_OPTIONS = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _copy(url: str, out, hint: str) -> tuple[str, int]:
    """Stream ``url`` into ``out``; return its hex SHA-256 and size."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in _chunks(url, hint):
        hasher.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def _chunks(url: str, hint: str) -> Iterator[bytes]:
    """Yield the body of ``url``; network failures become one-line DatasetErrors."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(CHUNK):
                yield chunk
    except urllib.error.HTTPError as err:
        raise DatasetError(
            f"{url}: download failed with HTTP {err.code} {err.reason}; {hint}"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        why = reason(getattr(err, "reason", err))
        raise DatasetError(
            f"{url}: could not download ({why}); is the network reachable? {hint}"
        ) from None


def _check_digest(remote: Remote, digest: str, size: int, kept: Path | None = None) -> None:
    """Raise unless ``digest`` is the published one; ``kept`` names a file left on disk."""
    if digest == remote.sha256:
        return
    expected_size = "" if remote.size is None else f" of {remote.size}"
    where = f"{kept}" if kept else f"{remote.url}"
    fate = "delete or replace it" if kept else "the download was deleted"
    raise DatasetError(
        f"{where}: SHA-256 mismatch, expected {remote.sha256}, got {digest} "
        f"({size}{expected_size} bytes); {fate}"
    )


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or member.name.startswith("\\"):
        raise DatasetError(
            f"{archive}: refusing to unpack member {member.name!r} "
            "(absolute path or '..' outside the target)"
        )
    if not (member.isfile() or member.isdir()):
        raise DatasetError(
            f"{archive}: refusing to unpack member {member.name!r} "
            "(only plain files and folders are allowed)"
        )


def _merge_into(staging: Path, directory: Path) -> None:
    """Move every unpacked file into ``directory``, replacing same-named files only."""
    for source in sorted(staging.rglob("*")):
        if source.is_file():
            destination = directory / source.relative_to(staging)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
