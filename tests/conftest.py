from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _data_dir(env: str, default: Path, what: str) -> Path:
    path = Path(os.environ.get(env, default))
    if not path.is_dir():
        pytest.skip(
            f"{what} not found at {path}: put ../shared beside the repository "
            f"or set {env} to the folder"
        )
    return path


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """The LFW folder (images/ and pairs.txt); override with DEVICEBIO_LFW."""
    return _data_dir("DEVICEBIO_LFW", SHARED / "data" / "lfw", "LFW images")


@pytest.fixture(scope="session")
def video_dir() -> Path:
    """The real face videos; override with DEVICEBIO_VIDEO."""
    return _data_dir("DEVICEBIO_VIDEO", SHARED / "data" / "video", "face videos")


@pytest.fixture(scope="session")
def pipeline():
    """One real face pipeline for the whole run (models build on first use, offline)."""
    pytest.importorskip("cv2", reason="the face pipeline needs the [device] extra")
    from devicebio.vision.pipeline import FacePipeline

    return FacePipeline()


def pytest_report_header(config: pytest.Config) -> str:
    """Says up front which PostgreSQL the store suite will start, and whether it must."""
    import subprocess

    from helpers.postgres import REQUIRE_ENV, find_bindir, required

    bindir = find_bindir()
    must = f"{REQUIRE_ENV}=1: must run" if required() else "skips if absent"
    if bindir is None:
        return f"postgresql: no server binaries found ({must})"
    version = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"postgresql: {version} in {bindir} ({must})"


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL cluster for the whole run (see tests/helpers/postgres.py).

    Skips only when no PostgreSQL binaries (or no psycopg) are installed, and fails instead
    under DEVICEBIO_REQUIRE_POSTGRES=1, as CI runs: there the PostgreSQL tests cannot
    silently not run. A server that is installed but does not start is always a failure.
    """
    from helpers.postgres import REQUIRE_ENV, PostgresServer, find_bindir, required

    missing = None
    bindir = find_bindir()
    if bindir is None:
        missing = (
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH, in"
            " /usr/local/bin or /usr/lib/postgresql/*/bin: install Debian's postgresql"
        )
    else:
        try:
            import psycopg  # noqa: F401
            import psycopg_pool  # noqa: F401
        except ImportError:
            missing = "psycopg / psycopg-pool not installed (the [postgres] extra)"
    if missing is not None:
        if required():
            pytest.fail(f"{REQUIRE_ENV} is set but PostgreSQL cannot run: {missing}")
        pytest.skip(f"PostgreSQL tests skipped: {missing}")
    assert bindir is not None
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
