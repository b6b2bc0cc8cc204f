"""uvicorn's h11 protocol with a deadline for each request head (imported only to serve).

uvicorn times out only idle keep-alive connections after a response: a socket that connects
and sends nothing, or trickles a head byte by byte, is held forever (and with it a slot of
``limit_concurrency``). Here the head must be complete ``header_timeout`` seconds after the
connection opens or the previous response ends, whatever arrives in between; otherwise the
connection is closed. A module-level class, so a spawned worker process can unpickle the
config that names it; the timeout travels on that config (``HEAD_TIMEOUT_ATTR``).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HEAD_TIMEOUT_ATTR", "HeadTimeoutH11"]

HEAD_TIMEOUT_ATTR = "devicebio_header_timeout"
_DEFAULT = 10.0


class HeadTimeoutH11(H11Protocol):
    _head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        timeout = float(getattr(self.config, HEAD_TIMEOUT_ATTR, _DEFAULT))
        self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_timer()  # the head is in; the body has its own timeout

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)
