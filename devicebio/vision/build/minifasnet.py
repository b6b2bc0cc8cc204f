"""Convert minivision's MiniFASNet anti-spoofing checkpoints (.pth) into the ONNX files that
``devicebio/models/pad/`` ships.

Build-time only, and needs neither torch nor the network: the two checkpoints are torch's
*legacy* (pre-1.6) serialisation, a few pickles followed by raw little-endian storages, which
``read_legacy_checkpoint`` decodes with a restricted unpickler (it accepts nothing but the
handful of names a state dict needs, so a hostile file cannot run code).

The network is rebuilt from the state dict's own tensor names and shapes. What the names do
not say, and what was checked against the upstream definition:

- every ``Conv_block`` (``conv`` + ``bn`` + ``prelu``) is a bias-free convolution, batch norm,
  PReLU; a block without ``prelu`` (``project``, ``conv_6_dw``) stops after the batch norm;
- ``conv1`` is 3x3 stride 2, ``conv2_dw`` 3x3 stride 1 depthwise; in every inverted-bottleneck
  block the depthwise 3x3 (padding 1) carries the stride: 2 in the transition blocks
  ``conv_23``/``conv_34``/``conv_45``, 1 inside the residual stages ``conv_3``/``conv_4``/
  ``conv_5``, whose blocks add their input back;
- a block with ``se_module`` (squeeze-and-excitation) rescales the projection by
  ``sigmoid(bn2(fc2(relu(bn1(fc1(mean_hw(x)))))))`` before the residual add;
- ``conv_6_dw`` is a depthwise convolution as large as the remaining 5x5 map (no padding),
  then ``linear`` (512->128, no bias), a 1-D batch norm, ``prob`` (128->3, no bias);
  batch norms use eps 1e-5; dropout is the identity at inference.

Batch norms are folded into the preceding convolution or matrix in float64, then cast to
float32, so the file is a plain Conv/PRelu/Add/Mul graph. Classes are [spoof (print),
live, spoof (replay)]: index 1 is the live class.

The input the graph takes is what upstream feeds its torch model: an 80x80 crop in **BGR**
channel order, float32, **0..255 (no scaling, no mean)**, NCHW. See ``devicebio.vision.pad``.

Output is deterministic (fixed names, fixed order, no timestamps): the same checkpoint gives
the same bytes, pinned below and in ``devicebio/models/pad/PROVENANCE``.

Command (from the repository root)::

    python -m devicebio.vision.build.minifasnet --src DIR_WITH_PTH --out devicebio/models/pad
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import pickle
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision.pad import INPUT_SIZE, PAD_MODELS, PadModelSource

UPSTREAM_REPOSITORY: Final = "github.com/minivision-ai/Silent-Face-Anti-Spoofing"
UPSTREAM_COMMIT: Final = "b6d5f04ad78778917853b25c778acef6d5626d15"
UPSTREAM_DIR: Final = "resources/anti_spoof_models"

_BN_EPS: Final = 1e-5
_OPSET: Final = 17
# IR 8 keeps the files loadable by every onnxruntime the device extra allows (>= 1.17).
_IR_VERSION: Final = 8


def _fail(message: str) -> DeviceBioError:
    return DeviceBioError(Reason.MODEL_BUILD_FAILED, message)


# --------------------------------------------------------------------------- checkpoint reader

_STORAGE_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}
_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype[Any]


@dataclass
class _Storage:
    dtype: np.dtype[Any]
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    return _TensorRef(
        storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride)
    )


class _CheckpointUnpickler(pickle.Unpickler):
    """Accepts only what a plain state dict is made of; anything else is refused."""

    def __init__(self, stream: io.BytesIO, storages: dict[str, _Storage]) -> None:
        super().__init__(stream)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise _fail(f"checkpoint refers to {module}.{name}, which a state dict never needs")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise _fail("checkpoint has an unknown persistent reference")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise _fail("checkpoint storage of an unknown type")
        return self._storages.setdefault(str(key), _Storage(storage_type.dtype, int(numel)))


def read_legacy_checkpoint(data: bytes) -> dict[str, np.ndarray]:
    """A torch legacy-format state dict as numpy arrays (names without ``module.``)."""
    stream = io.BytesIO(data)
    storages: dict[str, _Storage] = {}

    def load() -> Any:
        try:
            return _CheckpointUnpickler(stream, storages).load()
        except DeviceBioError:
            raise
        except Exception as exc:
            raise _fail(f"not a torch legacy checkpoint ({type(exc).__name__})") from exc

    if load() != _LEGACY_MAGIC:
        raise _fail("not a torch legacy checkpoint (bad magic number)")
    load()  # protocol version
    sys_info = load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
        raise _fail("checkpoint was not written little-endian")
    state = load()
    keys = load()
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise _fail("checkpoint does not hold a state dict")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise _fail("checkpoint lists a storage nothing refers to")
        (numel,) = struct.unpack("<q", stream.read(8))
        raw = stream.read(numel * storage.dtype.itemsize)
        if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
            raise _fail("checkpoint storage is truncated")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if stream.read(1):
        raise _fail("checkpoint has trailing bytes")

    out: dict[str, np.ndarray] = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef) or ref.storage.data is None:
            raise _fail(f"state dict entry {name!r} is not a stored tensor")
        flat = ref.storage.data
        needed = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if any(n == 0 for n in ref.size) or needed >= flat.size:
            raise _fail(f"state dict entry {name!r} points outside its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :],
            shape=ref.size,
            strides=tuple(s * flat.itemsize for s in ref.stride),
            writeable=False,
        )
        out[name.removeprefix("module.")] = np.array(view, copy=True)
    return out


# --------------------------------------------------------------------------- graph builder


class _Graph:
    """Accumulates nodes and initialisers in a fixed order with fixed names."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.used: set[str] = set()
        self._n = 0

    def take(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise _fail(f"state dict has no {key!r}")
        self.used.add(key)
        return self.state[key].astype(np.float64)

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [name], name=f"{name}/{op}", **attrs))
        return name

    def bn_fold(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        gamma = self.take(f"{prefix}.weight")
        beta = self.take(f"{prefix}.bias")
        mean = self.take(f"{prefix}.running_mean")
        var = self.take(f"{prefix}.running_var")
        self.used.add(f"{prefix}.num_batches_tracked")
        g = gamma / np.sqrt(var + _BN_EPS)
        return g, beta - mean * g

    def conv(self, x: str, prefix: str, *, stride: int, pad: int, act: bool, bn: str = "") -> str:
        """``prefix.conv`` (or ``prefix`` when bn is given) + folded batch norm [+ PReLU]."""
        wkey = f"{prefix}.weight" if bn else f"{prefix}.conv.weight"
        w = self.take(wkey)
        out_c, in_per_group, kh, kw = w.shape
        depthwise = in_per_group == 1 and kh * kw > 1 and not bn
        groups = out_c if depthwise else 1
        g, b = self.bn_fold(bn or f"{prefix}.bn")
        wf = (w * g[:, None, None, None]).astype(np.float32)
        name = prefix
        y = self.node(
            "Conv",
            [x, self.const(f"{name}.w", wf), self.const(f"{name}.b", b.astype(np.float32))],
            name,
            kernel_shape=[int(kh), int(kw)],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=int(groups),
        )
        if act:
            slope = self.take(f"{prefix}.prelu.weight").astype(np.float32).reshape(-1, 1, 1)
            y = self.node("PRelu", [y, self.const(f"{name}.slope", slope)], f"{name}.prelu")
        return y

    def bottleneck(self, x: str, prefix: str, *, stride: int, residual: bool) -> str:
        y = self.conv(x, f"{prefix}.conv", stride=1, pad=0, act=True)
        y = self.conv(y, f"{prefix}.conv_dw", stride=stride, pad=1, act=True)
        y = self.conv(y, f"{prefix}.project", stride=1, pad=0, act=False)
        if f"{prefix}.se_module.fc1.weight" in self.state:
            se = f"{prefix}.se_module"
            s = self.node("GlobalAveragePool", [y], f"{se}.pool")
            s = self.conv(s, f"{se}.fc1", stride=1, pad=0, act=False, bn=f"{se}.bn1")
            s = self.node("Relu", [s], f"{se}.relu")
            s = self.conv(s, f"{se}.fc2", stride=1, pad=0, act=False, bn=f"{se}.bn2")
            s = self.node("Sigmoid", [s], f"{se}.sigmoid")
            y = self.node("Mul", [y, s], f"{se}.scale")
        if residual:
            y = self.node("Add", [x, y], f"{prefix}.add")
        return y

    def stage(self, x: str, prefix: str) -> str:
        count = 0
        while f"{prefix}.model.{count}.conv.conv.weight" in self.state:
            count += 1
        if count == 0:
            raise _fail(f"state dict has no blocks in {prefix}")
        for i in range(count):
            x = self.bottleneck(x, f"{prefix}.model.{i}", stride=1, residual=True)
        return x


def build_onnx(state: dict[str, np.ndarray], name: str) -> bytes:
    """The MiniFASNet in ``state`` as ONNX bytes: input ``input`` (N, 3, 80, 80) BGR 0..255,
    outputs ``logits`` and ``probabilities`` (N, 3; index 1 = live)."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError as exc:
        raise DeviceBioError(
            Reason.DEPENDENCY_MISSING, "onnx is needed to build models", hint="pip install onnx"
        ) from exc

    g = _Graph(state)
    x = g.conv("input", "conv1", stride=2, pad=1, act=True)
    x = g.conv(x, "conv2_dw", stride=1, pad=1, act=True)
    x = g.bottleneck(x, "conv_23", stride=2, residual=False)
    x = g.stage(x, "conv_3")
    x = g.bottleneck(x, "conv_34", stride=2, residual=False)
    x = g.stage(x, "conv_4")
    x = g.bottleneck(x, "conv_45", stride=2, residual=False)
    x = g.stage(x, "conv_5")
    x = g.conv(x, "conv_6_sep", stride=1, pad=0, act=True)
    # conv_6_dw: depthwise, kernel = the whole remaining map (5x5 for an 80x80 input)
    w6 = g.take("conv_6_dw.conv.weight")
    g6, b6 = g.bn_fold("conv_6_dw.bn")
    x = g.node(
        "Conv",
        [
            x,
            g.const("conv_6_dw.w", (w6 * g6[:, None, None, None]).astype(np.float32)),
            g.const("conv_6_dw.b", b6.astype(np.float32)),
        ],
        "conv_6_dw",
        kernel_shape=[int(w6.shape[2]), int(w6.shape[3])],
        strides=[1, 1],
        pads=[0, 0, 0, 0],
        group=int(w6.shape[0]),
    )
    x = g.node("Flatten", [x], "flatten", axis=1)
    lin = g.take("linear.weight")  # (128, 512)
    gl, bl = g.bn_fold("bn")
    x = g.node(
        "Gemm",
        [
            x,
            g.const("linear.w", (lin * gl[:, None]).astype(np.float32)),
            g.const("linear.b", bl.astype(np.float32)),
        ],
        "embedding",
        transB=1,
    )
    prob = g.take("prob.weight")  # (3, 128)
    logits = g.node("Gemm", [x, g.const("prob.w", prob.astype(np.float32))], "logits", transB=1)
    g.node("Softmax", [logits], "probabilities", axis=1)

    unused = sorted(set(state) - g.used)
    if unused:
        raise _fail(f"state dict has tensors this architecture does not use: {unused[:3]}")

    graph = helper.make_graph(
        g.nodes,
        name,
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE]
            )
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3]),
        ],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        producer_name="devicebio.vision.build.minifasnet",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", _OPSET)],
        doc_string=(
            f"{name}: MiniFASNet face anti-spoofing from {UPSTREAM_REPOSITORY} @ "
            f"{UPSTREAM_COMMIT} (Apache-2.0). Input: 80x80 BGR crop, float 0..255, NCHW. "
            "Classes: 0 print, 1 live, 2 replay."
        ),
    )
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def convert(source: PadModelSource, checkpoint: bytes, *, check_pins: bool = True) -> bytes:
    """ONNX bytes for ``source`` from the upstream checkpoint's bytes, pins checked."""
    digest = hashlib.sha256(checkpoint).hexdigest()
    if check_pins and digest != source.checkpoint_sha256:
        raise DeviceBioError(
            Reason.MODEL_HASH_MISMATCH,
            f"{source.checkpoint} is not the pinned upstream file (sha256 {digest[:16]}...)",
        )
    out = build_onnx(read_legacy_checkpoint(checkpoint), source.name)
    built = hashlib.sha256(out).hexdigest()
    if check_pins and built != source.onnx_sha256:
        raise DeviceBioError(
            Reason.MODEL_HASH_MISMATCH,
            f"{source.name}.onnx built with sha256 {built[:16]}..., not the pinned one "
            "(different onnx or numpy version?)",
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, type=Path, help="folder with the upstream .pth")
    parser.add_argument("--out", required=True, type=Path, help="folder for the .onnx files")
    parser.add_argument(
        "--no-pins", action="store_true", help="print new hashes instead of enforcing the pins"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for source in PAD_MODELS.values():
        data = (args.src / source.checkpoint).read_bytes()
        onnx_bytes = convert(source, data, check_pins=not args.no_pins)
        (args.out / f"{source.name}.onnx").write_bytes(onnx_bytes)
        print(
            f"{source.name}.onnx  {len(onnx_bytes)} bytes  "
            f"source sha256 {hashlib.sha256(data).hexdigest()}  "
            f"onnx sha256 {hashlib.sha256(onnx_bytes).hexdigest()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
