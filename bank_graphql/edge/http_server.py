"""uvicorn's httptools protocol with a bound on what a client can spend before the application
sees its request, which uvicorn leaves open: header bytes and fields, the time to send a head
or a body, and open connections.

httptools buffers a header field until it is complete, so its size is counted as the bytes
arrive, not when the field is handed over. A connection refused on its head is answered
(431, 414, 408) with the JSON error every refusal gets, then closed; a refusal that arrives
while a client is still sending is written, the rest of the input read and dropped, and the
connection closed at its head deadline, so the client reads the answer rather than a reset.
"""

import asyncio
import logging
import resource
import socket
from dataclasses import replace
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from bank_graphql.api.codes import ErrorCode
from bank_graphql.edge.http_errors import error_response
from bank_graphql.edge.http_limits import HttpLimits

log = logging.getLogger(__name__)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._head_pending = False
        self._head_bytes = 0  # whole reads received while a head was pending
        self._fields_bytes = 0
        self._fields_count = 0
        self._body_late = False
        self._refusal: tuple[int, ErrorCode, str] | None = None
        self._draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.send_buffer_bytes)
        if len(self.connections) > self.limits.connections_max:
            self._answer(
                503, ErrorCode.TOO_MANY_CONNECTIONS, "too many open connections; retry shortly"
            )
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return
        head_was_pending = self._head_pending
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._answer(*self._refusal, drain=True)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if head_was_pending and self._head_pending:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.header_bytes_max:
                self._answer(*self._headers_too_large(), drain=True)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        self._head_bytes = self._fields_bytes = self._fields_count = 0
        self._body_late = False
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.url_bytes_max:
            self._refuse(
                414, ErrorCode.URL_TOO_LONG, f"URL longer than {self.limits.url_bytes_max} bytes"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields_count += 1
        self._fields_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._fields_count > self.limits.headers_count_max:
            max_count = self.limits.headers_count_max
            self._refuse(431, ErrorCode.HEADERS_TOO_LARGE, f"more than {max_count} header fields")
        if len(self.url) + self._fields_bytes > self.limits.header_bytes_max:
            self._refuse(*self._headers_too_large())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_pending = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        upgrading = bool(self.parser.should_upgrade()) and self._should_upgrade()
        super().on_headers_complete()
        if not upgrading:
            timeout_s = self.limits.body_read_timeout_s
            self._body_timer = self.loop.call_later(timeout_s, self._body_overdue)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._body_late and not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request the parser cannot read gets the coded JSON error every refusal gets."""
        self._answer(400, ErrorCode.BAD_REQUEST, msg)

    # Deadlines and refusals

    def _arm_head_timer(self) -> None:
        timeout_s = self.limits.header_read_timeout_s
        self._head_timer = self.loop.call_later(timeout_s, self._head_overdue)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._responding() and not self._draining:
            self._arm_head_timer()  # a pipelined head waits behind a response in progress
        elif self._head_pending and not self._draining:
            message = f"request head not received within {self.limits.header_read_timeout_s:g} s"
            self._answer(408, ErrorCode.REQUEST_TIMEOUT, message)
        else:
            self.transport.close()

    def _body_overdue(self) -> None:
        self._body_timer = None
        self._body_late = True
        # A response in progress is left to finish: the application answers 408 itself when
        # it was waiting for the body (BodySizeLimit); the connection closes after it.
        if not self._responding() and not self.transport.is_closing():
            self.transport.close()

    def _responding(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _headers_too_large(self) -> tuple[int, ErrorCode, str]:
        max_bytes = self.limits.header_bytes_max
        return (
            431,
            ErrorCode.HEADERS_TOO_LARGE,
            f"request line and headers longer than {max_bytes} bytes",
        )

    def _refuse(self, status: int, code: ErrorCode, message: str) -> None:
        """From a parser callback: stop parsing; data_received answers."""
        self._refusal = (status, code, message)
        raise _Refused

    def _answer(self, status: int, code: ErrorCode, message: str, *, drain: bool = False) -> None:
        """Answer a request the application never saw and close the connection, after reading
        what the client still sends until the head deadline when `drain`."""
        self._head_pending = False
        if self._responding():  # the answer cannot cut into another response
            self.transport.close()
            return
        response = error_response(status, code, message)
        content = [STATUS_LINE[status]]
        headers = [*self.server_state.default_headers, *response.raw_headers]
        for name, value in [*headers, (b"connection", b"close")]:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"\r\n", bytes(response.body)])
        self.transport.write(b"".join(content))
        if drain and self._head_timer is not None and self.transport.can_write_eof():
            self._draining = True
            self.transport.write_eof()
        else:
            self.transport.close()


class _Refused(Exception):
    pass


def fit_to_open_files(limits: HttpLimits, files_reserved: int) -> HttpLimits:
    """Raise the soft open-files limit as far as the hard one allows, then keep
    `connections_max` below it: past it, accepting fails and clients wait unanswered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.connections_max + files_reserved
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return limits
    fitted = max(1, soft - files_reserved)
    log.warning(
        "open-files limit %d: connections_max lowered from %d to %d",
        soft,
        limits.connections_max,
        fitted,
    )
    return replace(limits, connections_max=fitted)
