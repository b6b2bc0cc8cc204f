"""Frame -> embedding speed: devicebio's pipeline against the dlib pipeline it replaces.

One run, the same frames, each pipeline in its own fresh subprocess (so that one's models,
allocator arenas and thread pools cannot inflate the other's peak memory):

* **devicebio**: ``FacePipeline(detector="fast")`` — BlazeFace short range (full range only
  when it finds nothing), the numpy port of dlib's 5-point predictor, OpenCV alignment, and
  the int8 ONNX ResNet with mirror averaging (chip and mirror in one batch of 2).
  ``--also-accurate`` adds ``detector="accurate"`` (MMOD alone); ``--levers`` adds the shipped
  pipeline with one setting changed (see ``LEVERS``).
* **dlib reference**, what ``face_recognition`` and Howdy run:
  ``dlib.get_frontal_face_detector()`` (HOG; upsample 0 here by default — face_recognition's
  default and Howdy's call use upsample 1, which is ~4x the pixels and much slower),
  ``dlib.shape_predictor`` (the 5-point model from face_recognition_models) and
  ``face_recognition_model_v1.compute_face_descriptor(img, shape, num_jitters=1)`` (the value
  face_recognition and Howdy pass; dlib treats <= 1 as "no jitter": one forward pass).

Frames: a fixed, seeded sample of LFW images (250x250) centred on a black 640x480 RGB canvas,
like a webcam frame. Each worker reads one frame at a time from a raw file written by the
parent, outside the timed region, so the frames never count in a worker's memory.

Both pipelines pick the largest face (``select="largest"`` for devicebio; the largest
rectangle for dlib, which then does one landmark + descriptor per frame — face_recognition
would describe every face, so this favours dlib). devicebio's quality gates stay on: a gated
frame ends without an embedding, which is why a like-for-like speed-up on frames where both
produced an embedding is reported too.

Scheduling: both workers start (one at a time), warm up, then take turns on chunks of
``--chunk`` frames, so a change in the machine's background load hits both alike. Reported:
wall-clock ms per frame (p50/p95/mean), fps = frames / summed per-frame time, CPU ms per frame
(all the process's threads: less sensitive to load than wall time, but it counts onnxruntime's
spin-waiting), peak RSS per worker from ``os.wait4`` (cross-checked with VmHWM), the time of a
frame with nobody in it, and the load average. Threads: ``--threads`` (default: cores) sets
onnxruntime's intra-op and OpenCV's threads and OMP/BLAS variables for both workers; dlib-bin
has no BLAS and runs single-threaded whatever the budget, so ``--threads 1`` is the
equal-budget comparison.

Run::

    cd /work/main && PYTHONPATH=/work/main DEVICEBIO_MODEL_DIR=/tmp/models \\
        /work/venv/bin/python benchmarks/pipeline_speed.py --json /tmp/ps.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import describe_machine, machine_line

FRAME_W, FRAME_H = 640, 480
FRAME_BYTES = FRAME_W * FRAME_H * 3
REPO = Path(__file__).resolve().parent.parent
DEFAULT_LFW = Path("/work/shared/data/lfw")
# issue 11: a frame in <= 8 ms p50 and >= 15x the dlib reference, in one run
TARGET_SPEEDUP = 15.0
TARGET_P50_MS = 8.0
DEVICEBIO_STAGES = ("detect", "landmarks", "align", "embed")
DLIB_STAGES = ("detect", "landmarks", "embed")


# ---- small helpers shared by parent and workers (stdlib only) -----------------------------


def _status_kb(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmHWM = peak RSS, VmRSS = current RSS)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _threads_now() -> int:
    return _status_kb("Threads")


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as fh:
        return [float(v) for v in fh.read().split()[:3]]


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _FrameReader:
    """Reads frame i of the raw (n, 480, 640, 3) uint8 file; one frame in memory at a time."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - lives as long as the worker
        self.n = os.fstat(self._fh.fileno()).st_size // FRAME_BYTES

    def __call__(self, i: int) -> Any:
        import numpy as np

        self._fh.seek(i * FRAME_BYTES)
        buf = bytearray(FRAME_BYTES)
        if self._fh.readinto(buf) != FRAME_BYTES:
            raise RuntimeError(f"frame {i}: short read")
        return np.frombuffer(buf, dtype=np.uint8).reshape(FRAME_H, FRAME_W, 3)


def _ms(t0: int, t1: int) -> float:
    return (t1 - t0) / 1e6


# ---- workers (each runs in its own process) -----------------------------------------------
# A worker loads its pipeline, warms up, says "ready", then runs the frame ranges the parent
# sends ("run a b" -> "ok") until "done". The parent alternates short chunks between the
# workers, so both see the same background load over time; an idle worker waits on a pipe and
# uses no CPU.

Runner = Any  # frame -> (status, detector used, stage timings, embedding or None)


# ---- levers: the shipped pipeline with one setting changed, to show what each one is worth ---
# Each runs as one more devicebio worker in the same interleaved run (``--levers a,b``), so its
# ratio against dlib is measured under the same load. They reach into the pipeline's private
# parts (a benchmark may) to undo or vary one choice the SDK made.
LEVERS: dict[str, dict[str, Any]] = {
    "no-mirror": {"doc": "embed the chip only (no mirror average)", "no_mirror": True},
    "mirror-2-runs": {"doc": "chip and mirror as two runs of 1, not one batch of 2", "split": True},
    "resnet-fp32": {"doc": "the fp32 ResNet (dlib-faithful) instead of int8", "embedder": "fp32"},
    "resnet-threads-1": {"doc": "ResNet on 1 intra-op thread", "resnet_threads": 1},
    "detect-threads-2": {"doc": "BlazeFace on 2 intra-op threads, not 1", "detect_threads": 2},
    "opt-basic": {"doc": "onnxruntime graph optimisation BASIC (not ALL)", "opt": "basic"},
    "opt-extended": {"doc": "onnxruntime graph optimisation EXTENDED", "opt": "extended"},
    "spin": {"doc": "onnxruntime threads spin between runs (its default)", "spin": True},
    "spin-100us": {"doc": "threads spin at most 100 us, then sleep", "spin": True, "spin_us": 100},
    "spin-in-run": {
        "doc": "threads spin inside a run, stop when it returns (force_spinning_stop)",
        "spin": True,
        "stop": True,
    },
    "resnet-spin-in-run": {
        "doc": "the ResNet's threads spin inside a run only; BlazeFace as shipped",
        "resnet_spin": True,
    },
}


def _lever_session(
    name: str,
    threads: int,
    *,
    opt: str = "all",
    spin: bool = False,
    spin_us: int | None = None,
    stop: bool = False,
    model: str | None = None,
) -> Any:
    """An onnxruntime session for model ``name`` with the lever's settings (else _ort's)."""
    import onnxruntime as ort

    from devicebio.vision import models

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[opt]
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
    if spin_us is not None:
        options.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
    if stop:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    data = models.load_model(model or name)
    kept = []
    if (model or name).startswith("dlib_resnet"):
        from devicebio.vision.embedder import session_initializers

        for key, arr in session_initializers().items():  # as the pipeline runs it
            kept.append(ort.OrtValue.ortvalue_from_numpy(arr))
            options.add_initializer(key, kept[-1])
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    session._devicebio_initializers = kept
    return session


def _apply_lever(pipe: Any, lever: dict[str, Any], threads: int) -> None:
    import numpy as np

    from devicebio.vision.detector_blaze import BlazeFaceDetector
    from devicebio.vision.embedder import Embedder

    opt, spin, spin_us = lever.get("opt", "all"), bool(lever.get("spin")), lever.get("spin_us")
    stop = bool(lever.get("stop"))
    resnet = lever.get("embedder") or getattr(pipe, "_embedder_model", "dlib_resnet_v1")
    rebuild_all = "opt" in lever or spin
    if rebuild_all or "resnet_threads" in lever or "embedder" in lever or "resnet_spin" in lever:
        t = lever.get("resnet_threads", getattr(pipe, "_resnet_threads", threads))
        r_spin = spin or bool(lever.get("resnet_spin"))
        r_stop = stop or bool(lever.get("resnet_spin"))
        pipe._embedder = Embedder(
            _lever_session(
                resnet,
                t,
                opt=opt,
                spin=r_spin,
                spin_us=spin_us,
                stop=r_stop,
                model=_resnet_model(resnet),
            )
        )
    if rebuild_all or "detect_threads" in lever:
        t = lever.get("detect_threads", getattr(pipe, "_detect_threads", threads))
        pipe._blazes = [
            BlazeFaceDetector(
                _lever_session(
                    f"mp_face_detection_{k}", t, opt=opt, spin=spin, spin_us=spin_us, stop=stop
                ),
                k,
            )
            for k in ("short_range", "full_range")
        ]
    if lever.get("split"):
        emb = pipe._embedder

        def two_runs(chips: Any) -> Any:
            out = emb.embed(chips) + emb.embed(np.ascontiguousarray(chips[:, :, ::-1]))
            return out * np.float32(0.5)

        emb.embed_mirrored = two_runs


def _resnet_model(kind: str) -> str:
    return {"fp32": "dlib_resnet_v1", "int8": "dlib_resnet_v1_int8"}.get(kind, kind)


def _setup_devicebio(args: argparse.Namespace, info: dict[str, Any]) -> tuple[Runner, Any]:
    try:
        import devicebio  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO))
    import cv2
    import numpy as np
    import onnxruntime as ort

    from devicebio.vision.pipeline import FaceCapture, FacePipeline

    # OpenCV (letterbox resize, warpAffine, Laplacian) gets the same budget as onnxruntime.
    cv2.setNumThreads(args.threads)
    info["rss_after_imports_mb"] = _status_kb("VmRSS") / 1024
    t0 = time.perf_counter()
    lever = LEVERS.get(args.lever) if args.lever else None
    mirror = args.mirror and not (lever and lever.get("no_mirror"))
    pipe = FacePipeline(detector=args.detector, threads=args.threads, mirror=mirror)
    if lever is not None:
        _apply_lever(pipe, lever, args.threads)
    info["init_s"] = time.perf_counter() - t0
    info["rss_after_models_mb"] = _status_kb("VmRSS") / 1024
    info |= {
        "pipeline": f"devicebio-{args.detector}",
        "lever": args.lever or "",
        "ort_intra_op_threads": args.threads,
        "cv2_threads": cv2.getNumThreads(),
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "mirror": mirror,
    }
    select = args.select

    def run(frame: Any) -> tuple[str, str, dict[str, float], Any]:
        result = pipe.analyze(frame, select=select)
        if isinstance(result, FaceCapture):
            stages = {k: float(v) for k, v in result.timings_ms.items()}
            return "embedding", result.detector, stages, result.embedding
        return str(result.code), "", {}, None

    return run, pipe


def _setup_dlib(args: argparse.Namespace, info: dict[str, Any]) -> tuple[Runner, Any]:
    import dlib
    import face_recognition_models as frm
    import numpy as np

    info["rss_after_imports_mb"] = _status_kb("VmRSS") / 1024
    t0 = time.perf_counter()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    info["init_s"] = time.perf_counter() - t0
    info["rss_after_models_mb"] = _status_kb("VmRSS") / 1024
    info |= {
        "pipeline": "dlib",
        "dlib": dlib.__version__,
        "dlib_use_blas": bool(dlib.DLIB_USE_BLAS),
        "dlib_use_lapack": bool(dlib.DLIB_USE_LAPACK),
        "dlib_use_cuda": bool(dlib.DLIB_USE_CUDA),
        "dlib_upsample": args.dlib_upsample,
        "numpy": np.__version__,
    }
    upsample = args.dlib_upsample

    def run(frame: Any) -> tuple[str, str, dict[str, float], Any]:
        t_a = time.perf_counter_ns()
        rects = detector(frame, upsample)
        t_b = time.perf_counter_ns()
        if len(rects) == 0:
            return "no_face", "", {"detect": _ms(t_a, t_b)}, None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = predictor(frame, rect)
        t_c = time.perf_counter_ns()
        # num_jitters=1 as face_recognition and Howdy pass it: dlib runs one forward pass
        desc = encoder.compute_face_descriptor(frame, shape, 1)
        vec = np.asarray(desc, dtype=np.float32)
        t_d = time.perf_counter_ns()
        stages = {"detect": _ms(t_a, t_b), "landmarks": _ms(t_b, t_c), "embed": _ms(t_c, t_d)}
        return "embedding", "hog", stages, vec

    return run, None


def _devicebio_micro(pipe: Any, read: _FrameReader, status: list[str], k: int) -> dict[str, Any]:
    """Each stage alone on up to ``k`` embedded frames, for the profile.

    Uses the pipeline's parts (private attributes: a benchmark may). BlazeFace (short range)
    and, for ``detector="accurate"``, MMOD are timed on the full 640x480 frame. Embedding is
    timed with and without the mirror pass.
    """
    if k <= 0 or pipe is None:
        return {}
    import numpy as np

    from devicebio.vision.align import face_chip
    from devicebio.vision.detector_blaze import to_dlib_box

    blazes, mmod = getattr(pipe, "_blazes", None) or [None], getattr(pipe, "_mmod", None)
    blaze = blazes[0]  # short range: the one that finds the faces of these frames
    shape, embedder = getattr(pipe, "_shape", None), getattr(pipe, "_embedder", None)
    out: dict[str, list[float]] = {
        "blazeface": [],
        "mmod": [],
        "landmarks": [],
        "align": [],
        "embed_single": [],
        "embed_mirrored": [],
    }
    idx = [i for i, s in enumerate(status) if s == "embedding"][:k]

    def timed(key: str, fn: Any, *a: Any) -> Any:
        t0 = time.perf_counter_ns()
        r = fn(*a)
        out[key].append(_ms(t0, time.perf_counter_ns()))
        return r

    for i in idx:
        frame = np.ascontiguousarray(read(i))
        if mmod is not None:
            timed("mmod", mmod.detect, frame)
        if blaze is None or shape is None or embedder is None:
            continue
        found = timed("blazeface", blaze.detect, frame)
        if not found:
            continue
        best = max(found, key=lambda d: d.width)
        lm = timed("landmarks", shape.predict, frame, to_dlib_box(best))
        chip = timed("align", face_chip, frame, lm)
        timed("embed_single", embedder.embed, chip[None])
        timed("embed_mirrored", embedder.embed_mirrored, chip[None])
    medians: dict[str, Any] = {k: (float(np.median(v)) if v else None) for k, v in out.items()}
    return medians | {"frames": len(idx)}


def _worker_main(args: argparse.Namespace) -> int:
    # The protocol owns the real stdout; anything else printed (by a library) goes to stderr.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    info: dict[str, Any] = {"rss_python_mb": _status_kb("VmRSS") / 1024}
    setup = _setup_dlib if args.worker == "dlib" else _setup_devicebio
    run, pipe = setup(args, info)
    import numpy as np

    read = _FrameReader(args.frames)
    n = read.n
    for i in range(min(args.warmup, n)):
        run(read(i))

    ms: list[float] = [float("nan")] * n
    cpu_ms: list[float] = [float("nan")] * n
    status, used = [""] * n, [""] * n
    stages: list[dict[str, float]] = [{} for _ in range(n)]
    emb = np.full((n, 128), np.nan, dtype=np.float32)
    busy_wall = busy_cpu = 0.0
    proto.write("ready\n")
    proto.flush()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "done":
            break
        a, b = int(cmd[1]), int(cmd[2])
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        for i in range(a, b):
            frame = read(i)
            c0 = time.process_time_ns()
            t0 = time.perf_counter_ns()
            status[i], used[i], stages[i], vec = run(frame)
            t1 = time.perf_counter_ns()
            c1 = time.process_time_ns()
            ms[i], cpu_ms[i] = _ms(t0, t1), _ms(c0, c1)
            if vec is not None:
                emb[i] = vec
        busy_wall += time.perf_counter() - wall0
        busy_cpu += _cpu_seconds() - cpu0
        proto.write("ok\n")
        proto.flush()
    info["os_threads"] = _threads_now()
    # A frame with nobody in it (a uniform grey 640x480): what a webcam costs between faces.
    # For devicebio "fast" this is BlazeFace *and* the MMOD fallback.
    blank = np.full((FRAME_H, FRAME_W, 3), 128, dtype=np.uint8)
    blank_ms = []
    for _ in range(args.blank):
        t0 = time.perf_counter_ns()
        blank_status = run(blank)[0]
        blank_ms.append(_ms(t0, time.perf_counter_ns()))
    info["blank_frame"] = {
        "ms_p50": float(np.median(blank_ms)) if blank_ms else None,
        "status": blank_status if blank_ms else None,
        "frames": len(blank_ms),
    }
    info["micro_ms"] = _devicebio_micro(pipe, read, status, args.micro)
    info["vmhwm_mb"] = _status_kb("VmHWM") / 1024
    info |= {
        "ms": ms,
        "cpu_ms": cpu_ms,
        "status": status,
        "detector_used": used,
        "stages_ms": stages,
        "cpu_util": busy_cpu / busy_wall if busy_wall > 0 else 0.0,
    }
    np.save(args.emb, emb)
    Path(args.out).write_text(json.dumps(info))
    return 0


# ---- parent: frames, subprocesses, statistics, report -------------------------------------


def _lfw_images(root: Path) -> Path:
    images = root / "images"
    return images if images.is_dir() else root


def _sample_paths(root: Path, n: int, seed: int) -> list[Path]:
    images = _lfw_images(root)
    paths = sorted(images.glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"no LFW images under {images} (set DEVICEBIO_LFW)")
    if n > len(paths):
        raise SystemExit(f"--n {n} > {len(paths)} images available")
    # Sorted list + seeded sample: the same frames on every machine and every run.
    return sorted(random.Random(seed).sample(paths, n))


def _write_frames(paths: list[Path], out: Path) -> None:
    """Decode each image, centre it on a black 640x480 RGB canvas, append to a raw file."""
    import cv2
    import numpy as np

    with open(out, "wb") as fh:
        for p in paths:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"cannot decode {p}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            if h > FRAME_H or w > FRAME_W:  # not the case for LFW; keep the aspect ratio
                s = min(FRAME_H / h, FRAME_W / w)
                rgb = cv2.resize(rgb, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
                h, w = rgb.shape[:2]
            canvas = np.zeros((FRAME_H, FRAME_W, 3), dtype=np.uint8)
            y0, x0 = (FRAME_H - h) // 2, (FRAME_W - w) // 2
            canvas[y0 : y0 + h, x0 : x0 + w] = rgb
            fh.write(canvas.tobytes())


class _Worker:
    """One pipeline in its own process, driven chunk by chunk over a pipe."""

    def __init__(
        self,
        kind: str,
        detector: str,
        args: argparse.Namespace,
        frames: Path,
        tmp: Path,
        lever: str = "",
    ) -> None:
        suffix = f"-{lever}" if lever else ""
        self.tag = kind if kind == "dlib" else f"devicebio-{detector}{suffix}"
        self.out, self.emb = tmp / f"{self.tag}.json", tmp / f"{self.tag}.npy"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            *("--worker", kind, "--detector", detector, "--frames", str(frames)),
            *("--out", str(self.out), "--emb", str(self.emb), "--threads", str(args.threads)),
            *("--warmup", str(args.warmup), "--select", args.select),
            *("--dlib-upsample", str(args.dlib_upsample), "--micro", str(args.micro)),
            *("--blank", str(args.blank), "--mirror" if args.mirror else "--no-mirror"),
            *(("--lever", lever) if lever else ()),
        ]
        env = dict(os.environ)
        # Any BLAS/OpenMP pool in either process gets the same budget as onnxruntime.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
        print(f"[pipeline_speed] starting {self.tag} ...", file=sys.stderr, flush=True)
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._expect("ready")

    def _expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != word:
            self.proc.kill()
            self.proc.wait()
            raise SystemExit(f"{self.tag} worker failed (said {line!r}, expected {word!r})")

    def run(self, a: int, b: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {a} {b}\n")
        self.proc.stdin.flush()
        self._expect("ok")

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("done\n")
        self.proc.stdin.close()
        # wait4 gives this one child's rusage: its own peak RSS, whatever else ran.
        _, wait_status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(wait_status)
        if self.proc.returncode != 0:
            raise SystemExit(f"{self.tag} worker failed with exit code {self.proc.returncode}")
        import numpy as np

        result: dict[str, Any] = json.loads(self.out.read_text())
        result["embeddings"] = np.load(self.emb)
        result["peak_rss_mb"] = usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
        return result


def _run_all(
    args: argparse.Namespace, frames: Path, tmp: Path
) -> tuple[list[dict[str, Any]], list[float]]:
    """Start every worker (one at a time), then alternate chunks of frames between them."""
    kinds = [("devicebio", "fast", "")]
    if args.also_accurate:
        kinds.append(("devicebio", "accurate", ""))
    kinds += [("devicebio", "fast", lever) for lever in args.levers]
    kinds.append(("dlib", "fast", ""))
    workers: list[_Worker] = []
    try:
        for kind, det, lever in kinds:
            workers.append(_Worker(kind, det, args, frames, tmp, lever))
        loads: list[float] = []
        for c, a in enumerate(range(0, args.n, args.chunk)):
            b = min(args.n, a + args.chunk)
            # who goes first alternates too, so neither always follows the other's cache damage
            for w in workers if c % 2 == 0 else workers[::-1]:
                w.run(a, b)
            loads.append(_loadavg()[0])
            print(f"[pipeline_speed] frames {b}/{args.n}", file=sys.stderr, flush=True)
        return [w.finish() for w in workers], loads
    finally:
        for w in workers:
            if w.proc.returncode is None and w.proc.poll() is None:
                try:
                    w.proc.kill()
                    w.proc.wait()
                except (OSError, ChildProcessError):
                    pass


def _pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    ms = r["ms"]
    n = len(ms)
    embedded = sum(s == "embedding" for s in r["status"])
    stage_names = DLIB_STAGES if r["pipeline"] == "dlib" else DEVICEBIO_STAGES
    full = [
        (st, t)
        for st, t, s in zip(r["stages_ms"], ms, r["status"], strict=True)
        if s == "embedding"
    ]
    stages: dict[str, Any] = {}
    if full:
        mean_total = float(np.mean([t for _, t in full]))
        for name in stage_names:
            vals = [st.get(name, 0.0) for st, _ in full]
            stages[name] = {
                "p50": _pct(vals, 50),
                "mean": float(np.mean(vals)),
                "share": float(np.mean(vals)) / mean_total if mean_total else 0.0,
            }
        other = [t - sum(st.get(k, 0.0) for k in stage_names) for st, t in full]
        stages["other"] = {
            "p50": _pct(other, 50),
            "mean": float(np.mean(other)),
            "share": float(np.mean(other)) / mean_total if mean_total else 0.0,
        }
    outcome_counts: dict[str, int] = {}
    for s in r["status"]:
        outcome_counts[s] = outcome_counts.get(s, 0) + 1
    used_counts: dict[str, int] = {}
    for u in r["detector_used"]:
        if u:
            used_counts[u] = used_counts.get(u, 0) + 1
    by_outcome = {
        code: {
            "n": cnt,
            "p50": _pct([t for t, s in zip(ms, r["status"], strict=True) if s == code], 50),
        }
        for code, cnt in outcome_counts.items()
    }
    return {
        "frames": n,
        "ms_p50": _pct(ms, 50),
        "ms_p95": _pct(ms, 95),
        "ms_mean": float(np.mean(ms)),
        "fps": 1000.0 * n / float(np.sum(ms)),
        "faces_found": n - outcome_counts.get("no_face", 0),
        "embedded": embedded,
        "outcomes": by_outcome,
        "detector_used": used_counts,
        "stages_ms": stages,
        "cpu_ms_p50": _pct(r["cpu_ms"], 50),
        "cpu_ms_mean": float(np.mean(r["cpu_ms"])),
        "peak_rss_mb": r["peak_rss_mb"],
        "vmhwm_mb": r["vmhwm_mb"],
        "rss_python_mb": r["rss_python_mb"],
        "rss_after_imports_mb": r["rss_after_imports_mb"],
        "rss_after_models_mb": r["rss_after_models_mb"],
        "init_s": r["init_s"],
        "blank_frame_ms_p50": r["blank_frame"]["ms_p50"],
        "blank_frame_status": r["blank_frame"]["status"],
        "cpu_util": r["cpu_util"],
        "os_threads": r["os_threads"],
    }


def _agreement(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Frames where both pipelines produced an embedding, and how close the two embeddings are.

    devicebio averages the chip and its mirror, so its embedding is not dlib's bit for bit even
    for the same face; the distance says whether both describe the same person (dlib's rule:
    Euclidean < 0.6).
    """
    import numpy as np

    ea, eb = a["embeddings"], b["embeddings"]
    both = np.isfinite(ea[:, 0]) & np.isfinite(eb[:, 0])
    n = len(a["ms"])
    out: dict[str, Any] = {"frames_both_embedded": int(both.sum()), "fraction_both": both.sum() / n}
    out["fraction_both"] = float(out["fraction_both"])
    out["only_first"] = int((np.isfinite(ea[:, 0]) & ~np.isfinite(eb[:, 0])).sum())
    out["only_second"] = int((~np.isfinite(ea[:, 0]) & np.isfinite(eb[:, 0])).sum())
    if both.any():
        d = np.linalg.norm(ea[both] - eb[both], axis=1)
        out["distance_p50"] = float(np.median(d))
        out["distance_p95"] = float(np.percentile(d, 95))
        out["fraction_same_person"] = float((d < 0.6).mean())
        ms_a = np.asarray(a["ms"])[both]
        ms_b = np.asarray(b["ms"])[both]
        out["first_ms_p50_both"] = float(np.median(ms_a))
        out["second_ms_p50_both"] = float(np.median(ms_b))
        out["speedup_both"] = float(np.median(ms_b) / np.median(ms_a))
    return out


def _machine(args: argparse.Namespace, dev: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """The shared machine description, plus what each worker reported of its own libraries."""
    return describe_machine() | {
        "onnxruntime": dev["onnxruntime"],
        "onnxruntime_intra_op_threads": dev["ort_intra_op_threads"],
        "opencv": dev["opencv"],
        "opencv_threads": dev["cv2_threads"],
        "numpy": dev["numpy"],
        "dlib": ref["dlib"],
        "dlib_threads": 1,
        "dlib_use_blas": ref["dlib_use_blas"],
        "dlib_use_lapack": ref["dlib_use_lapack"],
        "dlib_use_cuda": ref["dlib_use_cuda"],
        "thread_env": {"OMP_NUM_THREADS": str(args.threads)},
    }


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _print_report(report: dict[str, Any], sums: dict[str, dict[str, Any]]) -> None:
    m = report["machine"]
    print()
    print(machine_line(m))
    print(
        f"         onnxruntime intra-op threads {m['onnxruntime_intra_op_threads']}, opencv "
        f"threads {m['opencv_threads']}; dlib {m['dlib']} (BLAS={m['dlib_use_blas']}, "
        f"CUDA={m['dlib_use_cuda']}: single-threaded)"
    )
    cfg = report["config"]
    print(
        f"frames:  {cfg['n']} LFW images (seed {cfg['seed']}) centred on {FRAME_W}x{FRAME_H} "
        f"black RGB; warm-up {cfg['warmup']} frames; devicebio select={cfg['select']!r}, "
        f"mirror={cfg['devicebio_mirror']}; dlib HOG upsample={cfg['dlib_upsample']}, num_jitters=1"
    )
    lo = report["loadavg_during"]
    print(
        f"load average (1/5/15 min): start {report['loadavg_start']}, end "
        f"{report['loadavg_end']}; 1-min during the run {lo['min']:.2f}..{lo['max']:.2f} "
        f"on {m['cores']} cores (chunks of {cfg['chunk']} frames alternate between pipelines)"
    )
    print()
    head = (
        f"{'pipeline':<22}{'faces':>6}{'embed':>6}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}"
        f"{'fps':>8}{'CPU ms p50':>11}{'peak RSS MB':>12}{'CPU util':>9}{'init s':>7}"
    )
    print(head)
    print("-" * len(head))
    for name, s in sums.items():
        print(
            f"{name:<22}{s['faces_found']:>6}{s['embedded']:>6}{s['ms_p50']:>9.1f}"
            f"{s['ms_p95']:>9.1f}{s['ms_mean']:>9.1f}{s['fps']:>8.1f}{s['cpu_ms_p50']:>11.1f}"
            f"{s['peak_rss_mb']:>12.0f}{s['cpu_util']:>9.2f}{s['init_s']:>7.2f}"
        )
    print(
        "(ms = wall time per frame; CPU ms = CPU time of all the process's threads per frame; "
        "CPU util = CPU s / wall s while busy)"
    )
    print()
    print(
        f"speedup dlib_p50 / devicebio_p50 = {report['speedup']:.2f}x "
        f"(target {TARGET_SPEEDUP:.0f}x and devicebio p50 <= {TARGET_P50_MS:.0f} ms: "
        f"{'met' if report['target_met'] else 'NOT met'}); "
        f"by mean {report['speedup_mean']:.2f}x; by CPU time p50 {report['speedup_cpu']:.2f}x"
    )
    ag = report["agreement"]
    if "speedup_both" in ag:
        print(
            f"like-for-like (the {ag['frames_both_embedded']} frames both embedded): "
            f"devicebio p50 {ag['first_ms_p50_both']:.1f} ms, dlib p50 "
            f"{ag['second_ms_p50_both']:.1f} ms, speedup {ag['speedup_both']:.2f}x"
        )
        print(
            f"agreement: both embedded {ag['fraction_both']:.1%} of frames "
            f"(devicebio only {ag['only_first']}, dlib only {ag['only_second']}); "
            f"devicebio-vs-dlib embedding distance p50 {ag['distance_p50']:.3f}, "
            f"p95 {ag['distance_p95']:.3f}, < 0.6 on {ag['fraction_same_person']:.1%}"
        )
    for name, s in sums.items():
        print()
        outs = ", ".join(
            f"{k} {v['n']} (p50 {v['p50']:.1f} ms)" for k, v in sorted(s["outcomes"].items())
        )
        used = ", ".join(f"{k} {v}" for k, v in sorted(s["detector_used"].items()))
        print(f"{name}: outcomes: {outs}" + (f"; detector used: {used}" if used else ""))
        print(
            f"  RSS MB: after imports {s['rss_after_imports_mb']:.0f}, after models "
            f"{s['rss_after_models_mb']:.0f}, peak {s['peak_rss_mb']:.0f} (wait4), "
            f"VmHWM {s['vmhwm_mb']:.0f}; OS threads {s['os_threads']}"
        )
        if s["blank_frame_ms_p50"] is not None:
            print(
                f"  a frame with no face (uniform grey): {s['blank_frame_ms_p50']:.1f} ms "
                f"-> {s['blank_frame_status']}"
            )
        if s["stages_ms"]:
            print(
                "  stages, embedded frames, p50/mean ms (share of mean): "
                + ", ".join(
                    f"{k} {v['p50']:.1f}/{v['mean']:.1f} ({v['share']:.0%})"
                    for k, v in s["stages_ms"].items()
                )
            )
    micro = report.get("devicebio_micro_ms") or {}
    if micro.get("frames"):
        print()
        print(
            f"devicebio stages alone (median of {micro['frames']} frames, full 640x480 frame): "
            + ", ".join(f"{k} {_fmt(v)} ms" for k, v in micro.items() if k != "frames")
        )


def _print_levers(report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print()
    print("levers: the shipped pipeline with one setting changed, interleaved in this same run")
    head = (
        f"{'lever':<18}{'p50 ms':>8}{'p95 ms':>8}{'CPU ms':>8}{'x dlib':>8}{'RSS MB':>8}"
        f"{'embed':>6}{'embed ms':>9}{'d to shipped':>13}  what"
    )
    print(head)
    print("-" * len(head))
    print(
        f"{'(shipped)':<18}{report['devicebio_ms_p50']:>8.1f}{report['devicebio_ms_p95']:>8.1f}"
        f"{report['devicebio_cpu_ms_p50']:>8.1f}{report['speedup']:>8.2f}"
        f"{report['peak_rss_mb']:>8.0f}{report['devicebio_embedded']:>6}"
        f"{report['pipelines']['devicebio (fast)']['stages_ms']['embed']['p50']:>9.1f}"
        f"{'0':>13}  as shipped"
    )
    for row in rows:
        embed = row["stages_ms"].get("embed", {}).get("p50")
        print(
            f"{row['lever']:<18}{row['ms_p50']:>8.1f}{row['ms_p95']:>8.1f}{row['cpu_ms_p50']:>8.1f}"
            f"{row['speedup']:>8.2f}{row['peak_rss_mb']:>8.0f}{row['embedded']:>6}"
            f"{_fmt(embed):>9}{_fmt(row['distance_to_shipped_p50'], '.4f'):>13}  {row['doc']}"
        )
    print("(d to shipped: median distance between the lever's and the shipped unit embeddings)")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="LFW frames (default 200)")
    p.add_argument("--seed", type=int, default=2024, help="sample seed (default 2024)")
    p.add_argument("--lfw", default=os.environ.get("DEVICEBIO_LFW", str(DEFAULT_LFW)))
    p.add_argument("--warmup", type=int, default=10, help="untimed frames first (default 10)")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="onnxruntime intra-op and OpenCV threads for devicebio (default: cores)",
    )
    p.add_argument("--select", choices=("only", "largest", "center"), default="largest")
    p.add_argument("--dlib-upsample", type=int, default=0, help="HOG upsample (default 0)")
    p.add_argument("--also-accurate", action="store_true", help='also detector="accurate"')
    p.add_argument("--micro", type=int, default=30, help="frames for the per-stage profile")
    p.add_argument(
        "--blank", type=int, default=3, help="blank (no-face) frames timed at the end (default 3)"
    )
    p.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="devicebio mirror averaging (default on, the pipeline's default)",
    )
    p.add_argument(
        "--chunk", type=int, default=10, help="frames per turn when alternating (default 10)"
    )
    p.add_argument(
        "--levers",
        default="",
        help="comma-separated extra devicebio workers, each the shipped pipeline with one "
        f"setting changed, in the same run: {', '.join(LEVERS)} (or 'all')",
    )
    p.add_argument("--json", help="write the results here")
    # internal: worker mode
    p.add_argument("--worker", choices=("devicebio", "dlib"), help=argparse.SUPPRESS)
    p.add_argument("--detector", default="fast", help=argparse.SUPPRESS)
    p.add_argument("--frames", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--emb", help=argparse.SUPPRESS)
    p.add_argument("--lever", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = [x for x in args.levers.split(",") if x] if args.levers else []
    args.levers = list(LEVERS) if names == ["all"] else names
    unknown = [x for x in [*args.levers, *([args.lever] if args.lever else [])] if x not in LEVERS]
    if unknown:
        p.error(f"unknown lever(s) {unknown}; known: {', '.join(LEVERS)}")
    if args.n < 1 or args.threads < 1 or args.chunk < 1:
        p.error("--n, --threads and --chunk must be >= 1")
    if min(args.warmup, args.micro, args.blank, args.dlib_upsample) < 0:
        p.error("--warmup, --micro, --blank and --dlib-upsample must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        return _worker_main(args)

    load_start = _loadavg()
    paths = _sample_paths(Path(args.lfw), args.n, args.seed)
    with tempfile.TemporaryDirectory(prefix="pipeline_speed_") as tmp_name:
        tmp = Path(tmp_name)
        frames = tmp / "frames.raw"
        _write_frames(paths, frames)
        results, loads = _run_all(args, frames, tmp)
    load_end = _loadavg()
    dev, ref = results[0], results[-1]
    acc = results[1] if args.also_accurate else None

    sums = {"devicebio (fast)": _summary(dev)}
    if acc is not None:
        sums["devicebio (accurate)"] = _summary(acc)
    sums["dlib HOG+5pt+ResNet"] = _summary(ref)
    d, r = sums["devicebio (fast)"], sums["dlib HOG+5pt+ResNet"]
    speedup = r["ms_p50"] / d["ms_p50"]
    report: dict[str, Any] = {
        "devicebio_ms_p50": d["ms_p50"],
        "devicebio_ms_p95": d["ms_p95"],
        "devicebio_fps": d["fps"],
        "dlib_ms_p50": r["ms_p50"],
        "dlib_ms_p95": r["ms_p95"],
        "dlib_fps": r["fps"],
        "speedup": speedup,
        "speedup_mean": r["ms_mean"] / d["ms_mean"],
        "speedup_cpu": r["cpu_ms_p50"] / d["cpu_ms_p50"],
        "devicebio_cpu_ms_p50": d["cpu_ms_p50"],
        "dlib_cpu_ms_p50": r["cpu_ms_p50"],
        "target_speedup": TARGET_SPEEDUP,
        "target_p50_ms": TARGET_P50_MS,
        "target_met": speedup >= TARGET_SPEEDUP and d["ms_p50"] <= TARGET_P50_MS,
        "peak_rss_mb": d["peak_rss_mb"],
        "dlib_peak_rss_mb": r["peak_rss_mb"],
        "devicebio_faces_found": d["faces_found"],
        "devicebio_embedded": d["embedded"],
        "dlib_faces_found": r["faces_found"],
        "dlib_embedded": r["embedded"],
        "devicebio_blank_frame_ms": d["blank_frame_ms_p50"],
        "dlib_blank_frame_ms": r["blank_frame_ms_p50"],
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "loadavg_during": {"min": min(loads), "max": max(loads), "samples": loads},
        "machine": _machine(args, dev, ref),
        "config": {
            "n": args.n,
            "seed": args.seed,
            "frame": f"{FRAME_W}x{FRAME_H} RGB uint8, LFW image centred, black border",
            "warmup": args.warmup,
            "select": args.select,
            "devicebio_detector": "fast (BlazeFace, MMOD fallback)",
            "devicebio_mirror": args.mirror,
            "dlib_upsample": args.dlib_upsample,
            "dlib_num_jitters": 1,
            "dlib_face": "largest HOG rectangle, one descriptor per frame",
            "threads": args.threads,
            "chunk": args.chunk,
            "schedule": "workers alternate chunks of frames (order flips each chunk)",
            "dlib_note": "dlib-bin is built without BLAS/CUDA and runs single-threaded",
            "peak_rss_method": "os.wait4 ru_maxrss of each worker process (own process each)",
        },
        "agreement": _agreement(dev, ref),
        "devicebio_micro_ms": dev.get("micro_ms", {}),
        "pipelines": sums,
    }
    if acc is not None:
        a = sums["devicebio (accurate)"]
        report["accurate"] = {
            "ms_p50": a["ms_p50"],
            "ms_p95": a["ms_p95"],
            "fps": a["fps"],
            "peak_rss_mb": a["peak_rss_mb"],
            "speedup": r["ms_p50"] / a["ms_p50"],
            "agreement_with_dlib": _agreement(acc, ref),
        }
    first_lever = 2 if args.also_accurate else 1
    lever_rows = []
    for name, res in zip(args.levers, results[first_lever:-1], strict=True):
        s = _summary(res)
        ag = _agreement(res, dev)
        lever_rows.append(
            {
                "lever": name,
                "doc": LEVERS[name]["doc"],
                "ms_p50": s["ms_p50"],
                "ms_p95": s["ms_p95"],
                "cpu_ms_p50": s["cpu_ms_p50"],
                "speedup": r["ms_p50"] / s["ms_p50"],
                "peak_rss_mb": s["peak_rss_mb"],
                "embedded": s["embedded"],
                "stages_ms": s["stages_ms"],
                "distance_to_shipped_p50": ag.get("distance_p50"),
            }
        )
    report["levers"] = lever_rows
    _print_report(report, sums)
    if acc is not None:
        print(f"\naccurate detector: speedup {report['accurate']['speedup']:.2f}x")
    if lever_rows:
        _print_levers(report, lever_rows)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
