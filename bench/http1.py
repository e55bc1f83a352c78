"""A lean HTTP/1.1 client for the load: one keep-alive connection per client, answers parsed
by httptools (the C parser uvicorn uses).

The raw-SQL reference is driven by pgbench, a C client that costs PostgreSQL's machine
little. aiohttp costs about 0.3-0.4 ms of CPU a request on the same cores, which the server
then lacks; this client costs a fraction of that, so the ratio measures the server rather
than the load generator. `--client aiohttp` keeps the old one for comparison.
"""

import asyncio
import urllib.parse
from collections.abc import Mapping
from typing import cast

import httptools


class ConnectionClosed(ConnectionError):
    """The server closed the connection before it answered."""


class _Connection(asyncio.Protocol):
    """One connection, one request in flight at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # An OSError like any broken connection: the load counts it as a failure.
            self._fail(ConnectionClosed(f"unreadable answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionClosed("the server closed the connection"))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result((self._parser.get_status_code(), b"".join(self._body)))
        if not self._parser.should_keep_alive():
            self.close()

    def _fail(self, exc: BaseException) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    def send(self, message: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self._transport is not None
        assert self._answer is None
        self._body = []
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(message)
        return self._answer

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class Client:
    """POSTs to one URL over one kept-alive connection, reopened after a failure."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme == "http", url
        assert parts.hostname, url
        self._host = parts.hostname
        self._port = parts.port or 80
        lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode()
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None

    async def _open(self) -> _Connection:
        if self._connection is None or self._connection.closed:
            loop = asyncio.get_running_loop()
            _, self._connection = await loop.create_connection(_Connection, self._host, self._port)
        return self._connection

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Status and body of the answer; raises OSError or TimeoutError."""
        connection = await self._open()
        message = b"%s%d\r\n\r\n%s" % (self._head, len(body), body)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await connection.send(message)
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
