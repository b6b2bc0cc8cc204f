"""Creating onnxruntime sessions the same way everywhere in the SDK."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from devicebio.errors import DeviceBioError, Reason


def make_session(
    model_bytes: bytes,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    initializers: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model_bytes``.

    ``providers`` defaults to ``["CPUExecutionProvider"]`` (never whatever onnxruntime happens
    to pick, so results do not change with the machine); ``threads`` (intra-op) defaults to
    ``os.cpu_count()``. All graph optimisations are enabled. ``initializers`` replace the
    model's constants of the same names in this session (the pinned file is not touched); the
    arrays are kept alive with the session, as onnxruntime requires.

    Raises ``DeviceBioError`` with DEPENDENCY_MISSING when onnxruntime is not installed,
    INVALID_ARGUMENT for a bad ``threads``/``providers`` value, and MODEL_BUILD_FAILED when
    onnxruntime cannot load the model.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise DeviceBioError(
            Reason.DEPENDENCY_MISSING,
            "onnxruntime is not installed",
            hint="pip install 'devicebio[device]'",
        ) from exc
    if not isinstance(model_bytes, bytes | bytearray | memoryview):
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "model_bytes must be bytes")
    if threads is None:
        threads = os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "threads must be a positive integer")
    chosen = ["CPUExecutionProvider"] if providers is None else list(providers)
    if not chosen or not all(isinstance(p, str) for p in chosen):
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "providers must be a list of names")
    missing = [p for p in chosen if p not in ort.get_available_providers()]
    if missing:
        raise DeviceBioError(
            Reason.DEPENDENCY_MISSING, f"onnxruntime provider(s) not available: {missing}"
        )

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One graph, run sequentially: inter-op parallelism only adds threads here.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: keep library output quiet
    # Idle worker threads would otherwise spin on the other cores between runs; on a 2-core
    # device that starves the numpy/OpenCV stages and every other session (measured: the
    # whole pipeline ran 2-3x slower with spinning on, benchmarks/pipeline_speed.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    kept = []
    for name, array in (initializers or {}).items():
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
        options.add_initializer(name, value)
        kept.append(value)
    try:
        session = ort.InferenceSession(bytes(model_bytes), sess_options=options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad models
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED,
            f"onnxruntime could not load the model ({type(exc).__name__})",
        ) from exc
    # onnxruntime reads the replaced constants from these buffers for the session's lifetime
    session._devicebio_initializers = kept
    return session
