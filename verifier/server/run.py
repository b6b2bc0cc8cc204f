"""Running the app with uvicorn: ``verifier serve`` in the foreground, or a background thread
for tests and demos. Loopback only unless told otherwise: there is no TLS here, so exposing
the service beyond this machine belongs behind a TLS reverse proxy."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette

from verifier.errors import Reason, VerifierError

from .http import Limits

__all__ = [
    "DEFAULT_HOST",
    "MAX_WORKERS",
    "BackgroundServer",
    "serve",
    "serve_in_thread",
    "serve_workers",
]

DEFAULT_HOST = "127.0.0.1"
#: More worker processes than this is a typo, not a deployment (one machine, one port).
MAX_WORKERS = 64


def _listening_socket(host: str, port: int, allow_non_loopback: bool) -> socket.socket:
    if host == "localhost":
        host = DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise VerifierError(Reason.MALFORMED, "host must be an IP address") from None
    if not address.is_loopback and not allow_non_loopback:
        # No TLS here: exposing it beyond this machine belongs behind a TLS reverse proxy.
        raise VerifierError(
            Reason.MALFORMED, f"{host} is not a loopback address (allow_non_loopback=True)"
        )
    if type(port) is not int or not 0 <= port <= 65535:
        raise VerifierError(Reason.MALFORMED, "port must be 0..65535")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only
    # on sockets whose proto says TCP, and accepted sockets inherit this one's. With proto 0
    # a response's head and body, written separately, waited for the client's delayed ACK:
    # ~40 ms per request, whatever the server did.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(address), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise VerifierError(Reason.STORAGE, f"cannot listen on {host}:{port}: {exc}") from None
    return sock


def _url(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}", int(port)


def _uvicorn_config(app: Any, access_log: bool, limits: Limits, **extra: Any) -> Any:
    import uvicorn

    from ._h11 import HEAD_TIMEOUT_ATTR, HeadTimeoutH11

    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=access_log,
        log_config=None,  # leave the host program's logging configuration alone
        log_level="info" if access_log else "warning",
        server_header=False,
        timeout_graceful_shutdown=5,
        http=HeadTimeoutH11,
        # Typed int by uvicorn, used as a float (loop.call_later): sub-second works.
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=limits.max_header_bytes,
        limit_concurrency=limits.limit_concurrency,
        **extra,
    )
    setattr(config, HEAD_TIMEOUT_ATTR, limits.header_timeout)  # read by HeadTimeoutH11
    return config


def _limits_of(app: Any) -> Limits:
    # The connection-level limits travel with the app (create_app puts them there), so every
    # way of serving it applies the same ones.
    state = getattr(app, "state", None)
    limits = getattr(state, "limits", None)
    return limits if isinstance(limits, Limits) else Limits()


def _uvicorn_server(app: Starlette, access_log: bool) -> Any:
    import uvicorn

    return uvicorn.Server(_uvicorn_config(app, access_log, _limits_of(app)))


def serve(
    app: Starlette,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    allow_non_loopback: bool = False,
    access_log: bool = False,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Run ``app`` with uvicorn until SIGINT/SIGTERM (blocking).

    Binds 127.0.0.1 unless ``host`` says otherwise; a non-loopback host is refused unless
    ``allow_non_loopback`` (put TLS in front first). ``port=0`` picks a free port;
    ``on_listening`` receives the URL once the socket listens (e.g. to print it).
    """
    sock = _listening_socket(host, port, allow_non_loopback)
    url, _ = _url(sock)
    if on_listening is not None:
        on_listening(url)
    _uvicorn_server(app, access_log).run(sockets=[sock])


class BackgroundServer:
    """A uvicorn server on a daemon thread (tests, demos). Use as a context manager."""

    def __init__(self, server: Any, thread: threading.Thread, url: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.url = url
        self.port = port

    def close(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_in_thread(
    app: Starlette,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    startup_timeout: float = 10.0,
) -> BackgroundServer:
    """Start ``app`` on a background thread (loopback only) and return once it accepts
    connections; raises ``VerifierError(STORAGE)`` if it does not start in time."""
    sock = _listening_socket(host, port, allow_non_loopback=False)
    url, bound_port = _url(sock)
    server = _uvicorn_server(app, access_log=False)

    # uvicorn makes a fresh event loop on this thread and skips signal handlers off the main
    # thread, so the host program keeps its own.
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name=f"verifier-server:{bound_port}",
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(startup_timeout)
            sock.close()
            raise VerifierError(Reason.STORAGE, "the HTTP server did not start")
        time.sleep(0.01)
    return BackgroundServer(server, thread, url, bound_port)


def serve_workers(
    factory: Callable[[], Starlette],
    *,
    workers: int,
    host: str = DEFAULT_HOST,
    port: int = 0,
    allow_non_loopback: bool = False,
    access_log: bool = False,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Run ``workers`` uvicorn worker processes on one listening socket (blocking).

    ``factory`` must be picklable (a module-level function, or a ``functools.partial`` of
    one): each worker is a fresh *spawned* interpreter that calls it to build its own app,
    and so opens its own store. Nothing is shared between workers but the socket and the
    database, which is what keeps them correct together (see docs/deployment.md). uvicorn's
    supervisor restarts a worker that dies; SIGINT/SIGTERM stop them all.
    """
    if type(workers) is not int or not 1 <= workers <= MAX_WORKERS:
        raise VerifierError(Reason.MALFORMED, f"workers must be 1..{MAX_WORKERS}")
    from uvicorn.supervisors import Multiprocess

    sock = _listening_socket(host, port, allow_non_loopback)
    url, _ = _url(sock)
    # factory=True: uvicorn calls the (unpickled) factory in each worker, never here.
    # A loaded machine can starve a worker's health-check thread for seconds: uvicorn's
    # default 5 s would kill and restart healthy workers mid-request.
    # The workers' apps are built there; their connection limits are the factory's own
    # (a functools.partial of create_app(limits=...)), or the defaults.
    keywords = getattr(factory, "keywords", None) or {}
    given = keywords.get("limits")
    limits = given if isinstance(given, Limits) else Limits()
    config = _uvicorn_config(
        factory,
        access_log,
        limits,
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=60,
    )
    if on_listening is not None:
        on_listening(url)
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
