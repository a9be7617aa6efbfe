"""How ``intygstjanst serve`` takes client connections, bounds them, and lets go of them (README
"Operating", and its settings ``INTYG_HEADER_DEADLINE_SECONDS``, ``INTYG_BODY_DEADLINE_SECONDS`` and
``INTYG_MAX_CONNECTIONS``). With no ingress in front (the chart's direct mode) nothing else bounds a client.

- ``Supervisor``: with several workers, the listening socket closes as the drain begins, so that a
  client connecting meanwhile is refused at once rather than left hanging.
- ``BoundedProtocol``: uvicorn's HTTP protocol with a deadline on each request's headers and a cap on
  the connections a worker holds open. A connection that sends nothing, or its headers a byte at a
  time, would otherwise be held for ever: uvicorn (0.54) bounds only an idle kept-alive connection
  (``timeout_keep_alive``), and only after a first response.
- ``BodyDeadline``: the body must arrive within its own deadline of the headers, else the channel's
  error (``BodyTooSlow``): REST answers problem+json 408, SOAP a soap:Client fault.

uvicorn's own ``limit_concurrency`` is not the cap: it is checked once a request's headers are in, so
connections beyond it that never send them would still be held, each until its header deadline.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.supervisors import Multiprocess


class Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, which also closes its own copy of the listening socket
    when shutdown begins.

    The parent binds the socket and each worker listens on a copy of it. On SIGTERM each worker closes
    its copy as it starts to drain (uvicorn's ``Server.shutdown``), but uvicorn (0.54) keeps the parent's
    copy open until the parent exits. The socket then still listens: the kernel completes handshakes
    into a backlog that no process accepts any more, so a client connecting during the drain hung until
    the grace period ended, and was then reset. Once every copy is closed the kernel refuses such a
    client at once, and a load balancer or client retries elsewhere."""

    def terminate_all(self) -> None:
        # The supervisor's first step of shutdown (``Multiprocess.run``), before SIGTERM to the workers:
        # they accept until they have it, then close their copies and the socket with them.
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


@dataclass(frozen=True)
class Limits:
    """Per worker process (``Settings.connection_limits``)."""

    header_deadline: float
    max_connections: int


def _plain(status: bytes, text: bytes) -> bytes:
    # Answered before any request is read, so in no channel's format; the connection closes after it.
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n" + text
    )


_HEADERS_TOO_SLOW = _plain(b"408 Request Timeout", b"The request did not arrive in time")
_TOO_MANY = _plain(b"503 Service Unavailable", b"Too many connections")


# Subclasses the protocol uvicorn would pick itself (httptools where installed, else h11) and uses only
# what both have: connection_made, data_received, connection_lost, `connections` (this worker's open
# connections), and `cycle`, which both replace by a new request's as soon as its headers are parsed.
class BoundedProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Answered at once, before its request: the worker holds no more than the cap.
            self.transport.write(_TOO_MANY)
            self.transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.header_timer is None and (self.cycle is None or self.cycle.response_complete):
            # The first byte of a next request on a kept-alive connection: its headers get the deadline
            # too (uvicorn's keep-alive timeout stops at the first byte).
            self._arm()
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self.header_timer = self.loop.call_later(self.limits.header_deadline, self._headers_too_slow)

    def _disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            # The timer runs only between a request's first byte (or the connection's opening) and its
            # complete headers: nothing is being answered on this connection (RFC 9110, 408).
            self.transport.write(_HEADERS_TOO_SLOW)
            self.transport.close()


class BodyTooSlow(HTTPException):
    """The request's body did not arrive within its deadline. REST answers it as any HTTP error
    (``rest/errors.py``: problem+json 408); the SOAP endpoint as a soap:Client fault."""

    def __init__(self) -> None:
        super().__init__(408)


class BodyDeadline:
    """The app is called as soon as a request's headers are in; its body must follow within
    ``seconds``. Once the body is complete, ``receive`` only waits for the client to go away (a
    streamed response listens for that), which is no read of the request and stays unbounded."""

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False

        async def bounded() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded, send)
