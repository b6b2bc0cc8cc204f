"""A throwaway PostgreSQL cluster for the tests: ``initdb`` in a temporary directory, a unix
socket in that directory (and optionally 127.0.0.1 on a free port), never a shared server.

Run as root, the cluster belongs to an unprivileged user (``postgres`` if it exists, else
``nobody``): PostgreSQL refuses to run as root. Stopping removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

#: Set to 1 (CI does) to make a missing server a test failure instead of a skip.
REQUIRE_ENV = "DEVICEBIO_REQUIRE_POSTGRES"
#: Points at a directory holding initdb, pg_ctl and postgres, to pick one installation.
BINDIR_ENV = "DEVICEBIO_PG_BINDIR"

SUPERUSER = "devicebio"


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0")


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def find_bindir() -> Path | None:
    """The first directory with initdb, pg_ctl and postgres: $DEVICEBIO_PG_BINDIR, then
    initdb on PATH, then /usr/local/bin, then Debian's /usr/lib/postgresql/*/bin (newest)."""
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates.append(Path("/usr/local/bin"))
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates.extend(Path(d) for d in debian)
    for d in candidates:
        if all(os.access(d / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One cluster. ``url()`` names a database on it; ``start()``/``stop()`` may be called
    again (a restart keeps the data) until ``destroy()``."""

    def __init__(self, bindir: Path, *, tcp: bool = False) -> None:
        self.bindir = bindir
        # The unix socket lives here, and its path must stay under ~100 bytes.
        tmp = tempfile.gettempdir()
        self.root = Path(
            tempfile.mkdtemp(prefix="devicebio-pg-", dir=tmp if len(tmp) < 60 else "/tmp")
        )
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port() if tcp else 5432
        self.tcp = tcp
        self._runas: list[str] = []
        if os.geteuid() == 0:
            user = "postgres"
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                user, pw = "nobody", pwd.getpwnam("nobody")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._runas = ["runuser", "-u", user, "--"]
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )

    def _run(self, tool: str, *args: str) -> str:
        proc = subprocess.run(
            [*self._runas, str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr[-2000:]}{log}")
        return proc.stdout

    @property
    def version(self) -> str:
        return self._run("postgres", "--version").strip()

    def start(self) -> None:
        listen = "127.0.0.1" if self.tcp else ""
        # fsync keeps its default (on): the stores are tested with the durability they
        # promise, and a test may still turn it off with ALTER SYSTEM (a command-line
        # setting could not be overridden). autovacuum off: nothing but the tests writes
        # (the commit-counting tests rely on it).
        options = (
            f"-k {self.root} -p {self.port} -c listen_addresses='{listen}'"
            " -c autovacuum=off -c max_connections=200 -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """``mode``: ``fast`` (clean), ``immediate`` (a crash: recovery on the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres", *, search_path: str | None = None) -> str:
        """A libpq URI for ``dbname`` over the unix socket (or TCP when started with it)."""
        host = f"127.0.0.1:{self.port}" if self.tcp else ""
        query = "" if self.tcp else f"?host={self.root}&port={self.port}"
        url = f"postgresql://{SUPERUSER}@{host}/{dbname}{query}"
        if search_path is not None:
            url += ("&" if "?" in url else "?") + f"options=-csearch_path%3D{search_path}"
        return url
