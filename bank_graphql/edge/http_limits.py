"""What one client may spend at the HTTP edge, and the ASGI middleware that bounds request
bodies by size and by time."""

import asyncio
from contextlib import suppress
from dataclasses import dataclass, fields

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bank_graphql.api.codes import ErrorCode
from bank_graphql.edge.http_errors import error_response
from bank_graphql.edge.media_types import response_media_type


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on connections, enforced before the application sees a request
    (bank_graphql/edge/http_server.py) and while it reads the body (`BodySizeLimit`)."""

    header_bytes_max: int = 16_384
    """The request line and header fields together."""
    headers_count_max: int = 100
    url_bytes_max: int = 8_192
    header_read_timeout_s: float = 10.0
    """From a connection's start, or a request's first byte, to the end of its headers."""
    body_read_timeout_s: float = 30.0
    """From the end of the headers to the last byte of the body."""
    keep_alive_timeout_s: int = 5
    """Idle time allowed between two requests on one connection."""
    connections_max: int = 1_000
    """Open connections, websockets included; kept below the open-files limit at start."""
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    send_buffer_bytes: int = 131_072
    """The kernel's send buffer of each connection (Linux doubles it for bookkeeping): what
    a client that stops reading makes the server hold. Left to itself the kernel grows it to
    megabytes, and a subscriber that stops reading would take long to count as too slow."""

    def __post_init__(self) -> None:
        for limit in fields(self):
            if getattr(self, limit.name) <= 0:
                raise ValueError(f"{limit.name} must be positive")


class BodySizeLimit:
    """Answer 413 when a body exceeds `body_bytes_max`, by header or as it streams in, and 408
    when it has not all arrived `body_read_timeout_s` after the application started."""

    def __init__(self, app: ASGIApp, body_bytes_max: int, body_read_timeout_s: float) -> None:
        self.app = app
        self.body_bytes_max = body_bytes_max
        self.body_read_timeout_s = body_read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        deadline = asyncio.get_running_loop().time() + self.body_read_timeout_s
        if declared is not None and declared.isdigit() and int(declared) > self.body_bytes_max:
            await self._refuse_too_large(scope, receive, send, deadline)
            return
        received = 0
        body_complete = False

        async def limited_receive() -> Message:
            nonlocal received, body_complete
            if body_complete:  # later reads wait for a disconnect, which takes no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if received > self.body_bytes_max:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            # The rest is dropped first, unless the message too large was the last one.
            await self._refuse_too_large(scope, receive, send, None if body_complete else deadline)
        except _BodyTooSlow:
            response = error_response(
                408,
                ErrorCode.REQUEST_TIMEOUT,
                f"request body not received within {self.body_read_timeout_s:g} s",
                method=scope["method"],
                media_type=response_media_type(Headers(scope=scope)),
            )
            # The rest of the body may never come: the connection cannot carry another request.
            response.headers["connection"] = "close"
            await response(scope, receive, send)

    async def _refuse_too_large(
        self, scope: Scope, receive: Receive, send: Send, deadline: float | None
    ) -> None:
        # Read and drop the rest first (`deadline` None: none is left): a client that sends
        # its whole body before it reads (urllib, many SDKs) would otherwise meet a reset
        # instead of this answer.
        if deadline is not None:
            await _drop_body(receive, deadline)
        response = error_response(
            413,
            ErrorCode.REQUEST_TOO_LARGE,
            f"request body larger than {self.body_bytes_max} bytes",
            method=scope["method"],
            media_type=response_media_type(Headers(scope=scope)),
        )
        await response(scope, receive, send)


DROPPED_BODY_BYTES_MAX = 32 * 1024 * 1024
"""What the server reads and drops of a refused body before it answers 413; past it (or
past the body's deadline) it answers and closes without reading on."""


async def _drop_body(receive: Receive, deadline: float) -> None:
    dropped = 0
    with suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            while dropped <= DROPPED_BODY_BYTES_MAX:
                message = await receive()
                if message["type"] != "http.request":
                    return
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass
