"""Crash-safe file replacement: temp file, fsync, rename, fsync the directory.

After a crash at any point the path holds either the complete old bytes or the complete new
bytes, never a mix; a stray ``.tmp`` file may remain and is removed on the next open.

It lives in the protocol package, not in ``devicebio.hazmat``, because both sides write files
that must never be half-written (the device its vault, the relying party its key files and
revocation lists) and the verifier may import nothing of the device side but the protocol.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TMP_SUFFIX = ".tmp"
FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path | str, data: bytes, *, mode: int = FILE_MODE, exclusive: bool = False
) -> None:
    """Write ``data`` to ``path`` so a reader sees the old or the new bytes, never a mix.

    ``exclusive``: fail with FileExistsError when ``path`` exists (the final step is a hard
    link, which cannot replace a file that appeared meanwhile).
    """
    path = Path(path)
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what the caller asked for
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def remove_durably(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=False, exist_ok=True)
    os.chmod(path, DIR_MODE)


def remove_stale_temps(directory: Path) -> None:
    for stale in directory.glob(f".*{TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
