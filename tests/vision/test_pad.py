"""The passive PAD models: committed ONNX files, their converter, and the runtime around them."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision import pad
from devicebio.vision.build import minifasnet

# The two upstream checkpoints are not in the repository (they are upstream's files, 1.8 MB
# each); point this at a folder holding them to run the reproduction tests.
ENV_UPSTREAM = "DEVICEBIO_PAD_UPSTREAM"


def _upstream_dir() -> Path:
    folder = os.environ.get(ENV_UPSTREAM)
    if not folder:
        pytest.skip(
            f"set {ENV_UPSTREAM} to a folder with upstream's 2.7_80x80_MiniFASNetV2.pth and "
            "4_0_0_80x80_MiniFASNetV1SE.pth (minivision-ai/Silent-Face-Anti-Spoofing @ "
            f"{minifasnet.UPSTREAM_COMMIT[:12]}) to check the conversion"
        )
    path = Path(folder)
    missing = [
        s.checkpoint for s in minifasnet.PAD_MODELS.values() if not (path / s.checkpoint).is_file()
    ]
    if missing:
        pytest.skip(f"{ENV_UPSTREAM}={folder} lacks {missing}")
    return path


def test_committed_files_match_their_pins() -> None:
    for source in minifasnet.PAD_MODELS.values():
        data = (pad.PAD_DIR / f"{source.name}.onnx").read_bytes()
        assert hashlib.sha256(data).hexdigest() == source.onnx_sha256
    assert (pad.PAD_DIR / "LICENSE").read_text().lstrip().startswith("Apache License")
    provenance = (pad.PAD_DIR / "PROVENANCE").read_text()
    for source in minifasnet.PAD_MODELS.values():
        assert source.checkpoint_sha256 in provenance and source.onnx_sha256 in provenance
    assert minifasnet.UPSTREAM_COMMIT in provenance


def test_converter_reproduces_the_committed_files() -> None:
    folder = _upstream_dir()
    for source in minifasnet.PAD_MODELS.values():
        built = minifasnet.convert(source, (folder / source.checkpoint).read_bytes())
        assert built == (pad.PAD_DIR / f"{source.name}.onnx").read_bytes()


def _reference_forward(torch, state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """An independent forward pass with torch's own ops and unfolded batch norms."""
    f = torch.nn.functional
    t = {k: torch.from_numpy(v) for k, v in state.items()}

    def bn(y, p):
        return f.batch_norm(
            y,
            t[f"{p}.running_mean"],
            t[f"{p}.running_var"],
            t[f"{p}.weight"],
            t[f"{p}.bias"],
            training=False,
            eps=1e-5,
        )

    def block(y, p, stride, pad_, act=True):
        w = t[f"{p}.conv.weight"]
        groups = w.shape[0] if w.shape[1] == 1 and w.shape[2] > 1 else 1
        y = bn(f.conv2d(y, w, stride=stride, padding=pad_, groups=groups), f"{p}.bn")
        return f.prelu(y, t[f"{p}.prelu.weight"]) if act else y

    def bottleneck(y, p, stride, residual):
        z = block(y, f"{p}.conv", 1, 0)
        z = block(z, f"{p}.conv_dw", stride, 1)
        z = block(z, f"{p}.project", 1, 0, act=False)
        if f"{p}.se_module.fc1.weight" in t:
            s = z.mean(dim=(2, 3), keepdim=True)
            s = f.relu(bn(f.conv2d(s, t[f"{p}.se_module.fc1.weight"]), f"{p}.se_module.bn1"))
            s = torch.sigmoid(bn(f.conv2d(s, t[f"{p}.se_module.fc2.weight"]), f"{p}.se_module.bn2"))
            z = z * s
        return y + z if residual else z

    y = torch.from_numpy(x)
    y = block(y, "conv1", 2, 1)
    y = block(y, "conv2_dw", 1, 1)
    for transition, stage in (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5")):
        y = bottleneck(y, transition, 2, False)
        i = 0
        while f"{stage}.model.{i}.conv.conv.weight" in t:
            y = bottleneck(y, f"{stage}.model.{i}", 1, True)
            i += 1
    y = block(y, "conv_6_sep", 1, 0)
    y = block(y, "conv_6_dw", 1, 0, act=False).flatten(1)
    y = f.batch_norm(
        y @ t["linear.weight"].T,
        t["bn.running_mean"],
        t["bn.running_var"],
        t["bn.weight"],
        t["bn.bias"],
        training=False,
        eps=1e-5,
    )
    return (y @ t["prob.weight"].T).numpy()


def test_onnxruntime_agrees_with_a_torch_reference() -> None:
    torch = pytest.importorskip(
        "torch", reason="the torch reference needs torch (not a dependency)"
    )
    folder = _upstream_dir()
    import onnxruntime as ort

    rng = np.random.default_rng(13)
    x = rng.uniform(0, 255, size=(6, 3, 80, 80)).astype(np.float32)
    for source in minifasnet.PAD_MODELS.values():
        raw = (folder / source.checkpoint).read_bytes()
        state = minifasnet.read_legacy_checkpoint(raw)
        # our reader and torch's own loader see the same tensors
        loaded = torch.load(folder / source.checkpoint, map_location="cpu", weights_only=True)
        assert {k.removeprefix("module.") for k in loaded} == set(state)
        for k, v in loaded.items():
            assert np.array_equal(state[k.removeprefix("module.")], v.numpy()), k
        with torch.no_grad():
            expected = _reference_forward(torch, state, x)
        session = ort.InferenceSession(
            (pad.PAD_DIR / f"{source.name}.onnx").read_bytes(), providers=["CPUExecutionProvider"]
        )
        logits, probs = session.run(["logits", "probabilities"], {"input": x})
        assert np.abs(logits - expected).max() < 1e-4, source.name
        softmax = np.exp(expected - expected.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        assert np.abs(probs - softmax).max() < 1e-5


def test_a_changed_or_missing_model_is_refused(tmp_path: Path) -> None:
    for source in minifasnet.PAD_MODELS.values():
        shutil.copy(pad.PAD_DIR / f"{source.name}.onnx", tmp_path)
    pad.PassivePad(tmp_path, threads=1)  # intact copies load
    victim = tmp_path / "minifasnet_v2_s2.7.onnx"
    data = bytearray(victim.read_bytes())
    data[-10] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(DeviceBioError) as err:
        pad.PassivePad(tmp_path, threads=1)
    assert err.value.reason is Reason.MODEL_HASH_MISMATCH
    victim.unlink()
    with pytest.raises(DeviceBioError) as err:
        pad.PassivePad(tmp_path, threads=1)
    assert err.value.reason is Reason.MODEL_MISSING


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_checkpoint_reader_runs_no_code() -> None:
    header = pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001)
    header += pickle.dumps({"little_endian": True})
    with pytest.raises(DeviceBioError) as err:
        minifasnet.read_legacy_checkpoint(header + pickle.dumps({"x": _Evil()}))
    assert err.value.reason is Reason.MODEL_BUILD_FAILED
    with pytest.raises(DeviceBioError) as err:
        minifasnet.read_legacy_checkpoint(b"PK\x03\x04 not legacy")
    assert err.value.reason is Reason.MODEL_BUILD_FAILED


def test_crop_follows_upstreams_rule() -> None:
    # centred and fits: 2.7x of a 100x120 box about its centre (250, 260)
    assert pad.crop_corners(640, 480, (200, 200, 100, 120), 2.7) == (115, 98, 385, 422)
    # the scale shrinks to what the frame holds (479 / 200), then the box is pushed inside
    x0, y0, x1, y1 = pad.crop_corners(640, 480, (0, 100, 200, 200), 4.0)
    assert (x0, y0, y1) == (0, 0, 479) and x1 in (478, 479)
    # a box near the right edge slides left, keeping its size
    x0, _, x1, _ = pad.crop_corners(640, 480, (600, 200, 30, 30), 2.7)
    assert x1 == 639 and x1 - x0 in (80, 81)
    with pytest.raises(DeviceBioError):
        pad.crop_corners(640, 480, (10, 10, 0, 20), 2.7)


def test_model_input_is_bgr_unscaled() -> None:
    rgb = np.zeros((200, 200, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    tensor = pad.model_input(rgb, (50, 50, 100, 100), 1.0)
    assert tensor.shape == (1, 3, 80, 80) and tensor.dtype == np.float32
    assert tensor[0, 2].min() == 200.0 and tensor[0, 0].max() == 0.0  # red lands in channel 2


def test_scores_are_probabilities_and_deterministic() -> None:
    detector = pad.PassivePad(threads=1)
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    a = detector.score_box(frame, (110, 70, 100, 110))
    b = detector.score_box(frame, (110, 70, 100, 110))
    assert a == b
    assert len(a.live) == 2 and all(0.0 <= p <= 1.0 for p in a.live)
    assert a.fused == pytest.approx(sum(a.live) / 2)
    assert repr(a) == "PassiveScore()"  # scores never reach a log line through repr
    assert len(detector.model_ids) == 2 and all("@" in m for m in detector.model_ids)


def test_moire_score_sees_a_pixel_grid() -> None:
    rng = np.random.default_rng(3)
    face = rng.normal(128, 6, size=(160, 160)).astype(np.float32)
    face = np.clip(face, 0, 255)
    yy, xx = np.mgrid[0:160, 0:160]
    # a screen's sub-pixel grid beating against the camera's sampling: an oblique grating
    grid = 25 * np.sin(2 * np.pi * (xx * 0.31 + yy * 0.17))
    plain = np.repeat(face[..., None], 3, axis=2).astype(np.uint8)
    screen = np.repeat(np.clip(face + grid, 0, 255)[..., None], 3, axis=2).astype(np.uint8)
    box = (10.0, 10.0, 140.0, 140.0)
    s_plain, s_screen = pad.moire_score(plain, box), pad.moire_score(screen, box)
    assert s_plain is not None and s_screen is not None
    assert s_screen > s_plain + 1.0
    assert pad.moire_score(plain, (10.0, 10.0, 30.0, 30.0)) is None  # too small to measure


def test_the_runtime_never_imports_the_converter() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from devicebio.liveness.passive import PassivePadDetector\n"
        "PassivePadDetector(threads=1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('devicebio.vision.build')\n"
        "             or m.split('.')[0] in ('onnx', 'torch')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
