"""Connection bounds that uvicorn lacks, and the listening socket.

uvicorn (0.55, h11) times out only a keep-alive connection that stays silent after a
response (``timeout_keep_alive``): a connection that never sends a byte, or sends its headers
or body a byte at a time, is held open for ever, and its file descriptor with it, until the
process cannot accept any more. ``limit_concurrency`` answers 503 to requests, but only once
their headers are in, and ``h11_max_incomplete_event_size`` bounds the size of the headers, not
their time. :class:`BoundedH11Protocol` adds the missing bounds; :func:`uvicorn_config` puts
them in uvicorn's config; :func:`fit_file_limit` makes room for the connections;
:func:`listen` binds the socket so that a busy port is one clean error.
"""

from __future__ import annotations

import asyncio
import functools
import http
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from rnnkit.errors import RnnkitError

if TYPE_CHECKING:
    from rnnkit.serve.app import ServeConfig

logger = logging.getLogger(__name__)

# Descriptors beside the connections: the listening socket, stdio, files opened while serving.
FILE_MARGIN = 64


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 connection with deadlines and a cap on open connections.

    From the moment a connection opens, or its previous response is sent, the client has
    ``header_timeout_s`` to deliver the next request's headers and ``read_timeout_s`` to
    deliver the whole request (headers and body). Past either, the connection is closed, with
    a 408 when part of a request came and no answer has begun. Once a request is in, the app's
    own ``timeout_s`` bounds the answer. uvicorn's keep-alive timeout stays: silence after a
    response closes the connection after ``keep_alive_s``.

    Past ``max_connections`` open connections, a new one closes the connection that has waited
    longest for a request (idle, or trickling its headers); when every other connection has a
    request in progress, the new one is answered 503 and closed.
    """

    def __init__(self, *args: Any, bounds: ServeConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bounds = bounds
        self.waiting_since = time.monotonic()  # when it began waiting for its next request
        self._answered: Any = None  # the request cycle answered before the awaited one
        self._heard = False  # whether any byte of the awaited request has come
        self._timer: asyncio.TimerHandle | None = None

    # -- uvicorn's hooks
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A new connection: its first request's deadlines start now. Past the cap, the
        connection waiting longest for a request is closed, or else this one is refused."""
        super().connection_made(transport)
        self._await_request()
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel the deadline timer, then let uvicorn clean up."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Bytes came: the awaited request has begun, so if it is late it gets a 408 rather
        than a silent close."""
        self._heard = True
        super().data_received(data)
        # A body that went on after its early answer (a 413) has ended: the next request's
        # time starts now; otherwise a finished early answer would leave it without a deadline.
        if self.is_idle() and self.cycle is not self._answered:
            self._await_request()

    def on_response_complete(self) -> None:
        """An answer was sent: the next request's deadlines start now, unless the client still
        sends the body of the request answered early."""
        # Before uvicorn reads a pipelined next request, so that its time starts now. Not while
        # the client still sends the body of a request answered early: its deadline holds.
        if not self.transport.is_closing() and self.conn.their_state is not h11.SEND_BODY:
            self._await_request()
        super().on_response_complete()

    # -- the deadlines
    def is_idle(self) -> bool:
        """No request in progress: waiting for one, or for the rest of its headers."""
        answered = self.cycle is None or self.cycle.response_complete
        return answered and self.conn.their_state is h11.IDLE

    def _await_request(self) -> None:
        self.waiting_since = time.monotonic()
        self._answered = self.cycle
        self._heard = False
        self._check_deadline()

    def _check_deadline(self) -> None:
        """Close the connection if the awaited request is late, else check again when due."""
        if self._timer is not None:  # one timer per connection, however many requests it has
            self._timer.cancel()
            self._timer = None
        if self.transport.is_closing():
            return
        b = self.bounds
        if self.cycle is self._answered:  # its headers are not all in
            due = min(b.header_timeout_s, b.read_timeout_s)
        elif self.conn.their_state is h11.SEND_BODY:  # its body is not all in
            due = b.read_timeout_s
        else:  # the request is in: the app's timeout bounds the rest
            return
        left = self.waiting_since + due - time.monotonic()
        if left > 0.005:  # a timer may fire a clock tick early
            self._timer = self.loop.call_later(left, self._check_deadline)
            return
        self._time_out(due)

    def _time_out(self, seconds: float) -> None:
        cycle = self.cycle if self.cycle is not self._answered else None
        late = self._heard  # part of a request came and no answer has begun: 408
        if cycle is not None:
            # The app may be waiting for the body: it hears of a disconnect and sends nothing.
            late = not cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
        if late:
            self._reply_and_close(408, f"the request did not arrive within {seconds:g} s")
        else:
            self.transport.close()  # nothing of a request came: close without a word

    # -- the cap
    def _make_room(self) -> None:
        """Past the cap, close the connection that has waited longest for a request."""
        if len(self.connections) <= self.bounds.max_connections:
            return
        idle = [c for c in self.connections if c is not self and _idle(c)]
        if idle:
            oldest = min(idle, key=lambda c: c.waiting_since)
            # Out of the count now, not when its close completes: else the next new connection
            # would count it again and close one more.
            self.connections.discard(oldest)
            oldest.transport.close()
        else:
            self.connections.discard(self)
            self._reply_and_close(503, "too many open connections; try again")

    def _reply_and_close(self, status: int, message: str) -> None:
        """An error answer in the server's JSON shape, written directly (the app may be busy
        or not involved), then close."""
        body = json.dumps({"error": {"status": status, "message": message}}).encode()
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()


def _idle(connection: Any) -> bool:
    return isinstance(connection, BoundedH11Protocol) and connection.is_idle()


def uvicorn_config(app: Any, config: ServeConfig, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's config for ``app`` with ``config``'s connection bounds; ``kwargs`` (host,
    port, log_level) go to :class:`uvicorn.Config` as they are."""
    return uvicorn.Config(
        app,
        http=functools.partial(BoundedH11Protocol, bounds=config),  # type: ignore[arg-type]
        ws="none",  # no WebSocket endpoints: an upgrade request is an ordinary request
        timeout_keep_alive=config.keep_alive_s,  # type: ignore[arg-type]
        **kwargs,
    )


def fit_file_limit(max_connections: int) -> int:
    """Raise the process's soft open-file limit so that ``max_connections`` sockets fit (up to
    the hard limit); returns how many connections fit, ``max_connections`` or fewer."""
    try:
        import resource
    except ImportError:  # Windows: no such limits to raise
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + FILE_MARGIN
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):  # macOS refuses more than its OPEN_MAX
            pass
    if soft == resource.RLIM_INFINITY or soft >= max_connections + FILE_MARGIN:
        return max_connections
    fits = max(1, soft - FILE_MARGIN)
    logger.warning(
        f"at most {fits:,} open connections, not --max-connections "
        f"{max_connections:,}: the open-file limit is {soft:,} (ulimit -n)"
    )
    return fits


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets on ``host``:``port``, one per address ``host`` resolves to (as
    uvicorn binds them); a port in use, or an address that cannot be bound, is one clean error
    before anything is served."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sockets: list[socket.socket] = []
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, *_, address in dict.fromkeys(found):
            # SO_REUSEADDR, as uvicorn sets it: a restart need not wait out TIME_WAIT.
            sockets.append(socket.create_server(address[:2], family=family, backlog=2048))
    except OSError as err:
        for sock in sockets:
            sock.close()
        # create_server adds the address to strerror; the message names it once already.
        plain = err.errno and not isinstance(err, socket.gaierror)
        reason = (os.strerror(err.errno) if plain else err.strerror or str(err)).lower()
        raise RnnkitError(f"cannot listen on {where} ({reason})") from None
    return sockets


__all__ = ["BoundedH11Protocol", "uvicorn_config", "fit_file_limit", "listen"]
