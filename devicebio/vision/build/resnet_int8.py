"""The int8 face embedder: dlib's ResNet graph (``build.resnet``) with static int8 quantisation.

Why: the two ResNet runs (chip and mirror) were ~70% of a camera frame; int8 convolutions run
them ~2.3x faster on x86 (VNNI) with LFW accuracy unchanged (docs/benchmarks.md has the lever
table, docs/evaluation.md the accuracy).

How (QDQ, the form onnxruntime fuses into integer kernels):

* weights: symmetric int8 per output channel (scale = max |w| / 127), biases int32 at
  input scale x weight scale, as onnxruntime's integer convolution expects;
* activations: asymmetric uint8 from fixed ranges, :data:`ACTIVATION_RANGES`, calibrated once
  on face chips of LFW people who are in NO evaluation pair (see :func:`calibrate_ranges`), and
  pinned here: building needs no images and always gives the same bytes;
* a ReLU after a convolution or a residual add is folded into the quantiser (a uint8 range
  starting at 0 clamps negatives exactly as the ReLU does); max-pool and pad pass uint8
  through on their input's scale;
* the chip normalisation before the first convolution and the tail (global average pool and
  the 256 -> 128 projection, a few thousand multiply-adds) stay float.

Only the ``onnx`` package is used: the output does not depend on onnxruntime's quantisation
tool or its version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision.models import MODELS

#: sha256 of build_resnet_int8_onnx's output for the pinned .dat (pinned in models.MODELS).
RESNET_INT8_ONNX_SHA256 = MODELS["dlib_resnet_v1_int8"].sha256

# Activation ranges (min, max) per tensor of the fp32 graph, made by calibrate_ranges() on 256
# chips and their mirrors: a seeded sample (seed 7) of the 1,549 LFW photos of people who
# appear in no pair of LFW's View-2 protocol, detected and aligned by the fast pipeline. They
# are pinned exactly as measured, not rounded: the int8 kernels' rounding moves embedding
# components by up to ~0.007 when a range moves by 1e-6 (docs/benchmarks.md).
ACTIVATION_RANGES: dict[str, tuple[float, float]] = {
    "transpose_5": (-0.479617178440094, 0.5886796712875366),
    "relu_9": (0.0, 10.210799217224121),
    "relu_14": (0.0, 9.776769638061523),
    "conv_17": (-8.965920448303223, 6.828763484954834),
    "relu_19": (0.0, 12.033391952514648),
    "relu_23": (0.0, 8.241240501403809),
    "conv_26": (-11.138933181762695, 12.627785682678223),
    "relu_28": (0.0, 19.391094207763672),
    "relu_32": (0.0, 8.522005081176758),
    "conv_35": (-12.780006408691406, 14.835397720336914),
    "relu_37": (0.0, 24.7814998626709),
    "relu_41": (0.0, 10.129500389099121),
    "averagepool_45": (0.0, 15.863500595092773),
    "conv_44": (-6.649598121643066, 9.051250457763672),
    "relu_49": (0.0, 15.387210845947266),
    "relu_53": (0.0, 6.5693206787109375),
    "conv_56": (-5.962882041931152, 9.400965690612793),
    "relu_58": (0.0, 15.02975845336914),
    "relu_62": (0.0, 6.650262355804443),
    "conv_65": (-7.081120014190674, 9.605367660522461),
    "relu_67": (0.0, 19.879770278930664),
    "relu_71": (0.0, 6.086950778961182),
    "conv_74": (-6.510283946990967, 7.476535320281982),
    "relu_76": (0.0, 19.600683212280273),
    "relu_80": (0.0, 6.78317928314209),
    "averagepool_84": (0.0, 10.630510330200195),
    "conv_83": (-4.601814270019531, 8.664695739746094),
    "relu_88": (0.0, 9.510523796081543),
    "relu_92": (0.0, 4.845015048980713),
    "conv_95": (-5.256839752197266, 5.829531192779541),
    "relu_97": (0.0, 10.856890678405762),
    "relu_101": (0.0, 5.528652667999268),
    "conv_104": (-6.000508785247803, 6.295367240905762),
    "relu_106": (0.0, 10.873575210571289),
    "relu_110": (0.0, 8.305051803588867),
    "averagepool_114": (0.0, 4.966848850250244),
    "conv_113": (-7.458584785461426, 22.247886657714844),
    "relu_120": (0.0, 22.247886657714844),
    "relu_124": (0.0, 5.802124977111816),
    "conv_127": (-10.442628860473633, 4.7195563316345215),
    "relu_129": (0.0, 18.956575393676758),
    "relu_133": (0.0, 3.48671555519104),
    "conv_136": (-3.0969889163970947, 2.6596100330352783),
    "relu_138": (0.0, 17.492084503173828),
    "relu_142": (0.0, 9.088300704956055),
    "conv_145": (-4.425998687744141, 2.4140312671661377),
    "averagepool_146": (0.0, 5.071090221405029),
}

_PASS_THROUGH = ("MaxPool", "Pad")  # uint8 in, uint8 out on the same scale
_QUANTISED = ("Conv", "Add", "AveragePool", *_PASS_THROUGH)


def _graph_plan(model: Any) -> tuple[list[str], dict[str, str]]:
    """The tensors to quantise, and each folded ReLU's output -> the tensor that replaces it.

    A tensor is quantised when a quantised op reads it; a ReLU that is the only reader of a
    convolution's or an add's output is dropped, its range applied to that output instead.
    """
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {i.name for i in model.graph.initializer}
    candidates: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Add"):
            readers = consumers.get(node.output[0], [])
            if len(readers) == 1 and readers[0].op_type == "Relu":
                candidates[readers[0].output[0]] = node.output[0]
    read: list[str] = []
    for node in model.graph.node:
        if node.op_type not in _QUANTISED:
            continue
        inputs = node.input[:1] if node.op_type in ("Conv", *_PASS_THROUGH) else node.input
        read += [name for name in inputs if name not in inits and name not in read]
    # only a ReLU whose output is quantised can be folded into the quantiser
    folded = {relu: src for relu, src in candidates.items() if relu in read}
    wanted = list(dict.fromkeys(folded.get(name, name) for name in read))
    return wanted, folded


def _range_tensors(model: Any) -> list[str]:
    """The fp32 graph's tensors whose range the calibration must measure."""
    wanted, folded = _graph_plan(model)
    by_output = {n.output[0]: n for n in model.graph.node}
    relu_of = {v: k for k, v in folded.items()}
    out = []
    for name in wanted:
        node = by_output.get(name)
        if node is not None and node.op_type in _PASS_THROUGH:
            continue  # takes its input's range
        out.append(relu_of.get(name, name))  # a folded output is measured after its ReLU
    return out


def calibrate_ranges(
    fp32_model: bytes, chips: Iterable[np.ndarray]
) -> dict[str, tuple[float, float]]:
    """Min and max of every tensor the quantiser needs, over batches of float32 chips.

    A development tool (how :data:`ACTIVATION_RANGES` was made), not used at run time.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(fp32_model)
    names = _range_tensors(model)
    shapes = {o.name for o in model.graph.output}
    for name in names:
        if name not in shapes:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    lo = dict.fromkeys(names, np.inf)
    hi = dict.fromkeys(names, -np.inf)
    for batch in chips:
        values = session.run(names, {"chips": np.ascontiguousarray(batch, np.float32)})
        for name, v in zip(names, values, strict=True):
            lo[name] = min(lo[name], float(v.min()))
            hi[name] = max(hi[name], float(v.max()))
    return {n: (lo[n], hi[n]) for n in names}


def _uint8_params(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero must be exact (padding, ReLU)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zero = int(np.clip(round(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zero)


def quantize_resnet(
    fp32_model: bytes, ranges: Mapping[str, tuple[float, float]] | None = None
) -> bytes:
    """The int8 (QDQ) graph of the fp32 embedder graph ``fp32_model``; deterministic bytes."""
    import onnx
    from onnx import helper, numpy_helper

    ranges = ACTIVATION_RANGES if ranges is None else ranges
    model = onnx.load_from_string(fp32_model)
    graph = model.graph
    wanted, folded = _graph_plan(model)
    by_output = {n.output[0]: n for n in graph.node}
    relu_of = {v: k for k, v in folded.items()}

    # Quantisation parameters of every quantised tensor; pass-through ops take their input's.
    params: dict[str, tuple[np.float32, np.uint8]] = {}
    for name in wanted:
        node = by_output.get(name)
        if node is not None and node.op_type in _PASS_THROUGH:
            source = folded.get(node.input[0], node.input[0])
            params[name] = params[source]
            continue
        key = relu_of.get(name, name)
        if key not in ranges:
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED, f"int8 ResNet: no calibrated range for {key!r}"
            )
        params[name] = _uint8_params(*ranges[key])

    inits = {i.name: i for i in graph.initializer}
    new_inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(value, name))
        return name

    def dq_name(tensor: str) -> str:
        return f"{tensor}_dq"

    for node in graph.node:
        if node.op_type == "Relu" and node.output[0] in folded:
            continue  # folded into its producer's quantiser
        # read the dequantised form of every quantised activation (and the folded ReLU's
        # producer in place of the ReLU)
        inputs = [folded.get(i, i) for i in node.input]
        inputs = [dq_name(i) if i in params else i for i in inputs]
        if node.op_type == "Conv":
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            w_scale = np.maximum(np.abs(w).reshape(w.shape[0], -1).max(axis=1), 1e-12) / 127.0
            wq = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
            x_scale = float(params[folded.get(node.input[0], node.input[0])][0])
            b_scale = (x_scale * w_scale).astype(np.float32)
            bq = np.round(b / b_scale.astype(np.float64)).astype(np.int32)
            wn, bn = node.input[1], node.input[2]
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [
                        const(f"{wn}_q", wq),
                        const(f"{wn}_scale", w_scale.astype(np.float32)),
                        const(f"{wn}_zero", np.zeros(w.shape[0], np.int8)),
                    ],
                    [f"{wn}_dq"],
                    name=f"{wn}_dequantize",
                    axis=0,
                )
            )
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [
                        const(f"{bn}_q", bq),
                        const(f"{bn}_scale", b_scale),
                        const(f"{bn}_zero", np.zeros(w.shape[0], np.int32)),
                    ],
                    [f"{bn}_dq"],
                    name=f"{bn}_dequantize",
                    axis=0,
                )
            )
            inputs = [inputs[0], f"{wn}_dq", f"{bn}_dq"]
        new = helper.make_node(node.op_type, inputs, list(node.output), name=node.name)
        new.attribute.extend(node.attribute)
        nodes.append(new)
        out = node.output[0]
        if out in params:
            scale, zero = params[out]
            s = const(f"{out}_scale", np.array(scale, np.float32))
            z = const(f"{out}_zero", np.array(zero, np.uint8))
            nodes.append(
                helper.make_node(
                    "QuantizeLinear", [out, s, z], [f"{out}_q"], name=f"{out}_quantize"
                )
            )
            nodes.append(
                helper.make_node(
                    "DequantizeLinear", [f"{out}_q", s, z], [dq_name(out)], name=f"{out}_deq"
                )
            )

    used_weights = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    used_weights |= {n.input[2] for n in graph.node if n.op_type == "Conv"}
    kept = [i for i in graph.initializer if i.name not in used_weights]
    out_graph = helper.make_graph(
        nodes,
        graph.name + "_int8",
        list(graph.input),
        list(graph.output),
        initializer=[*kept, *new_inits],
    )
    out_model = helper.make_model(
        out_graph,
        producer_name="devicebio",
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
    )
    del out_model.metadata_props[:]
    out_model.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(out_model)
    return out_model.SerializeToString(deterministic=True)


def build_resnet_int8_onnx(dat: bytes) -> bytes:
    """The int8 embedder from the bytes of ``dlib_face_recognition_resnet_model_v1.dat``.

    Raises ``DeviceBioError(Reason.MODEL_BUILD_FAILED)`` for anything the fp32 builder refuses
    or a graph this quantiser does not know.
    """
    from devicebio.vision.build.resnet import build_resnet_onnx

    fp32 = build_resnet_onnx(dat)
    try:
        return quantize_resnet(fp32)
    except DeviceBioError:
        raise
    except Exception as exc:  # an unexpected graph must not escape as a stray exception
        raise DeviceBioError(
            Reason.MODEL_BUILD_FAILED, f"int8 ResNet: {type(exc).__name__} while quantising"
        ) from exc
