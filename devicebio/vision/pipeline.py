"""Frame -> face embedding: detect, landmarks, align, quality gates, embed.

The pipeline does not know where frames come from (camera, video, folder, test double): it
takes one RGB ``uint8`` array at a time. Each stage is a real model built by
:mod:`devicebio.vision.models` and run on onnxruntime (or numpy for the landmark trees).

Detectors: ``"fast"`` (default) is MediaPipe's BlazeFace short range, a few ms per camera frame,
with BlazeFace full range (smaller, more distant faces) as the fallback when it finds nothing;
``"accurate"`` runs dlib's MMOD CNN alone (about 10x dlib-HOG's accuracy-per-miss, but ~0.3-1 s
per 640x480 frame on a laptop CPU, so not for live video).
Landmarks always come from dlib's 5-point predictor, on a box mapped into dlib's convention,
so alignment is dlib's and the embedder sees the chips it was trained on.

Embedders: ``"int8"`` (default) is dlib's ResNet with static int8 quantisation, about 2.3x
faster per chip with LFW accuracy unchanged; ``"fp32"`` is the faithful conversion (dlib's
embedding to ~1e-6). Their embeddings differ slightly, so each has its own ``model_id`` and a
template enrolled with one is refused by the other (enrol again).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.outcome import Outcome, OutcomeCode
from devicebio.vision import models
from devicebio.vision._checks import check_image
from devicebio.vision._ort import make_session
from devicebio.vision.align import face_chip
from devicebio.vision.detector_blaze import BlazeFaceDetector
from devicebio.vision.detector_blaze import to_dlib_box as blaze_to_dlib_box
from devicebio.vision.detector_mmod import MmodDetector
from devicebio.vision.detector_mmod import to_dlib_box as mmod_to_dlib_box
from devicebio.vision.embedder import Embedder, session_initializers
from devicebio.vision.landmarks import ShapePredictor5
from devicebio.vision.types import Detection

DetectorChoice = Literal["fast", "accurate"]
EmbedderChoice = Literal["int8", "fp32"]
Selection = Literal["only", "largest", "center"]

MAX_SIDE = 8192
# The embedder models: "int8" (default) is dlib's ResNet quantised to int8, ~2.3x faster with
# LFW accuracy unchanged; "fp32" is the faithful conversion (equal to dlib to ~1e-6).
EMBEDDERS: dict[str, str] = {"int8": "dlib_resnet_v1_int8", "fp32": "dlib_resnet_v1"}
# BlazeFace is ~100 small ops on a 128x128 input: a second intra-op thread costs more in
# hand-offs than it saves (docs/benchmarks.md, lever table).
DETECT_THREADS = 1


@dataclass(frozen=True)
class QualityLimits:
    """Capture-quality gates. Each limit says which way is stricter.

    - ``min_face_px``: face box width in pixels; higher is stricter.
    - ``min_brightness`` / ``max_brightness``: mean grey level (0-255) of the aligned face;
      a higher minimum / lower maximum is stricter.
    - ``min_sharpness``: variance of the Laplacian of the aligned grey face; higher is
      stricter.
    - ``max_yaw_deg``: head turn estimated from the 5 landmarks; lower is stricter.
    - ``several_faces_ratio``: a second face at least this fraction of the largest one's
      width counts as a second person in view; lower is stricter.
    """

    min_face_px: float = 60.0
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    min_sharpness: float = 15.0
    max_yaw_deg: float = 35.0
    several_faces_ratio: float = 0.5


@dataclass(frozen=True)
class FaceCapture:
    """A face that passed every gate, and its embedding (which stays in memory only)."""

    embedding: np.ndarray = field(repr=False)
    detection: Detection
    landmarks: np.ndarray = field(repr=False)
    quality: dict[str, float]
    timings_ms: dict[str, float]
    detector: str


FrameResult = FaceCapture | Outcome


def check_frame(frame: object) -> np.ndarray:
    """A frame fit for the pipeline, or BAD_IMAGE: never a crash deep in OpenCV/onnxruntime."""
    return check_image(frame, min_side=32, max_side=MAX_SIDE)


def estimate_yaw(landmarks5: np.ndarray) -> float:
    """Head yaw in degrees from dlib's 5 points; positive = the subject turned to their left.

    The nose tip sits in front of the eye line, so turning the head slides it along that line
    by about sin(yaw) times its depth; a nose depth of ~0.5 eye spans fits dlib's landmarks.
    """
    eyes = sorted([landmarks5[0:2].mean(axis=0), landmarks5[2:4].mean(axis=0)], key=lambda p: p[0])
    left_img, right_img = eyes
    axis = right_img - left_img
    span2 = float(axis @ axis)
    if span2 < 1e-6:
        return 90.0
    t = float((landmarks5[4] - left_img) @ axis) / span2
    return float(np.degrees(np.arcsin(np.clip((t - 0.5) / 0.5, -1.0, 1.0))))


def measure_quality(chip: np.ndarray) -> dict[str, float]:
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    # The centre of the chip is face; its border may be black padding outside the frame.
    core = grey[30:120, 30:120]
    return {
        "brightness": float(core.mean()),
        "sharpness": float(cv2.Laplacian(core, cv2.CV_64F).var()),
    }


class FacePipeline:
    """detect -> 5 landmarks -> 150x150 chip -> quality gates -> 128-D embedding."""

    def __init__(
        self,
        *,
        detector: DetectorChoice = "fast",
        limits: QualityLimits | None = None,
        mirror: bool = True,
        normalize: bool = True,
        embedder: EmbedderChoice = "int8",
        cache_dir: str | os.PathLike[str] | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        progress: bool = False,
    ) -> None:
        if detector not in ("fast", "accurate"):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, f"detector {detector!r}")
        if embedder not in EMBEDDERS:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, f"embedder {embedder!r}")
        self.detector = detector
        self.limits = limits or QualityLimits()
        self.mirror = mirror
        self.normalize = normalize

        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "threads must be a positive integer")
        self._resnet_threads = threads if threads is not None else (os.cpu_count() or 1)
        self._detect_threads = min(self._resnet_threads, DETECT_THREADS)
        self._embedder_model = EMBEDDERS[embedder]

        def session(name: str, n_threads: int) -> Any:
            data = models.load_model(name, cache_dir, progress=progress)
            extra = session_initializers() if name == self._embedder_model else None
            return make_session(data, providers, n_threads, extra)

        fast = ["mp_face_detection_short_range", "mp_face_detection_full_range"]
        detectors = fast if detector == "fast" else ["dlib_mmod"]
        needed = [self._embedder_model, "dlib_shape5", *detectors]
        models.build_models(needed, cache_dir, progress=progress)
        self._blazes: list[BlazeFaceDetector] = []
        self._mmod: MmodDetector | None = None
        if detector == "fast":
            self._blazes = [
                BlazeFaceDetector(session(f"mp_face_detection_{kind}", self._detect_threads), kind)
                for kind in ("short_range", "full_range")
            ]
        else:
            # MMOD is one large convolution pyramid: it does use every thread
            self._mmod = MmodDetector(session("dlib_mmod", self._resnet_threads))
        self._shape = ShapePredictor5.from_bytes(
            models.load_model("dlib_shape5", cache_dir), expected_sha256=None
        )
        self._embedder = Embedder(session(self._embedder_model, self._resnet_threads))
        self.model_id = models.MODELS[self._embedder_model].model_id

    # ---- stages --------------------------------------------------------------------------

    def detect(self, frame: np.ndarray) -> tuple[list[tuple[Detection, tuple]], str]:
        """Faces with their dlib-convention boxes, and which detector found them."""
        frame = check_frame(frame)
        for blaze in self._blazes:
            found = blaze.detect(frame)
            if found:
                return [(d, blaze_to_dlib_box(d)) for d in found], f"blazeface_{blaze.kind}"
        if self._mmod is None:
            return [], "blazeface"
        found = self._mmod.detect(frame)
        return [(d, tuple(mmod_to_dlib_box(d))) for d in found], "mmod"

    def analyze(
        self, frame: np.ndarray, *, select: Selection = "only", gates: bool = True
    ) -> FrameResult:
        """One frame -> a :class:`FaceCapture`, or the :class:`Outcome` saying what to fix.

        ``select``: "only" treats a second face of comparable size as SEVERAL_FACES (what
        authentication wants); "largest" / "center" pick one face (what photo sets want).
        ``gates=False`` skips the capture-quality gates (for evaluating photo sets; the
        measured quality is still returned). A face is always required.
        """
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        faces, used = self.detect(frame)
        timings["detect"] = _ms_since(t0)
        if not faces:
            return Outcome(OutcomeCode.NO_FACE)
        limits = self.limits
        widths = [box[2] - box[0] for _, box in faces]
        order = np.argsort(widths)[::-1]
        if select == "center":
            h, w = frame.shape[:2]
            centre = np.array([w / 2, h / 2])
            dists = [
                np.hypot(*((np.array(b[:2]) + np.array(b[2:])) / 2 - centre)) for _, b in faces
            ]
            pick = int(np.argmin(dists))
        else:
            pick = int(order[0])
            if gates and select == "only" and len(faces) > 1:
                second = widths[int(order[1])]
                if second >= limits.several_faces_ratio * widths[pick]:
                    return Outcome(OutcomeCode.SEVERAL_FACES, float(len(faces)), 1.0)
        detection, box = faces[pick]
        width = widths[pick]
        if gates and width < limits.min_face_px:
            return Outcome(OutcomeCode.FACE_TOO_SMALL, width, limits.min_face_px)

        t0 = time.perf_counter()
        landmarks = self._shape.predict(frame, box)
        timings["landmarks"] = _ms_since(t0)
        t0 = time.perf_counter()
        chip = face_chip(frame, landmarks)
        timings["align"] = _ms_since(t0)

        quality = measure_quality(chip)
        quality["face_px"] = float(width)
        quality["yaw_deg"] = estimate_yaw(landmarks)
        gate = self.gate(quality) if gates else None
        if gate is not None:
            return gate

        t0 = time.perf_counter()
        batch = chip[None]
        raw = (
            self._embedder.embed_mirrored(batch) if self.mirror else self._embedder.embed(batch)
        )[0]
        # Unit length: on LFW this lifts TAR at FAR 1e-3 from 94.7% to 97.7% at no cost, because
        # the norm carries capture conditions more than identity (docs/evaluation.md).
        norm = max(float(np.linalg.norm(raw)), 1e-12) if self.normalize else 1.0
        embedding = (raw / norm).astype(np.float32)
        timings["embed"] = _ms_since(t0)
        return FaceCapture(embedding, detection, landmarks, quality, timings, used)

    def gate(self, q: dict[str, float]) -> Outcome | None:
        """The first quality gate ``q`` fails, or None."""
        lim = self.limits
        if q["brightness"] < lim.min_brightness:
            return Outcome(OutcomeCode.TOO_DARK, q["brightness"], lim.min_brightness)
        if q["brightness"] > lim.max_brightness:
            return Outcome(OutcomeCode.TOO_BRIGHT, q["brightness"], lim.max_brightness)
        if abs(q["yaw_deg"]) > lim.max_yaw_deg:
            return Outcome(OutcomeCode.HEAD_TURNED, abs(q["yaw_deg"]), lim.max_yaw_deg)
        if q["sharpness"] < lim.min_sharpness:
            return Outcome(OutcomeCode.TOO_BLURRY, q["sharpness"], lim.min_sharpness)
        return None


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
