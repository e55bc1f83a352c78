"""What a stranger can spend at the HTTP edge of a real `bank-graphql serve`: header bytes and
fields, time holding a connection with a head or a body never finished, file descriptors,
websocket message size; and no redirect built from the Host header.

Tests take `database_url` before `serve`, so that the server stops before its database goes."""

import itertools
import json
import select
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from bank_graphql.edge.settings import settings_from_env
from tests.conftest import GraphQLClient
from tests.servers import Serve, Server

MIB = 1024 * 1024
# Generous: each bound below is a second or two; these waits only stop a broken run.
CLOSE_WAIT_S = 15


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _hold(sock: socket.socket, within_s: float, trickle: bytes = b"") -> tuple[bytes, bool]:
    """Act as a slow client: send `trickle` over and over, a byte every 0.2 s, and collect
    what the server sends. Returns it, and whether the server closed the connection."""
    received = b""
    pieces = itertools.cycle(trickle[i : i + 1] for i in range(len(trickle)))
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.send(next(pieces))
            ready, _, _ = select.select([sock], [], [], 0.2)
            chunk = sock.recv(65536) if ready else None
        except OSError:  # reset or broken pipe: closed
            return received, True
        if chunk == b"":
            return received, True
        received += chunk or b""
    return received, False


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def _error_code(response: bytes) -> str:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    errors: list[dict[str, Any]] = json.loads(body)["errors"]
    return str(errors[0]["extensions"]["code"])


def test_a_huge_header_is_refused_with_431_and_server_memory_stays_bounded(
    database_url: str, serve: Serve
) -> None:
    server = serve("--database-url", database_url)
    before_kib = _rss_kib(server.process.pid)
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: bank\r\nX-Big: ")
        try:
            for _ in range(48):
                sock.sendall(b"a" * MIB)
        except OSError:  # the server may close before it all went out
            pass
        during_kib = _rss_kib(server.process.pid)
        response, closed = _hold(sock, CLOSE_WAIT_S)
    assert during_kib - before_kib < 24 * 1024, (before_kib, during_kib)
    assert closed
    assert _status(response) == 431
    assert _error_code(response) == "HEADERS_TOO_LARGE"


def test_too_many_header_fields_or_a_long_url_are_refused(database_url: str, serve: Serve) -> None:
    server = serve("--database-url", database_url, env={"BANK_HEADERS_COUNT_MAX": "50"})
    many = b"".join(b"X-N%d: 1\r\n" % i for i in range(51))
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: bank\r\n" + many + b"\r\n")
        response, closed = _hold(sock, CLOSE_WAIT_S)
    assert closed
    assert _status(response) == 431
    assert _error_code(response) == "HEADERS_TOO_LARGE"

    with _connect(server) as sock:
        sock.sendall(b"GET /graphql?query=" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: bank\r\n\r\n")
        response, closed = _hold(sock, CLOSE_WAIT_S)
    assert closed
    assert _status(response) == 414
    assert _error_code(response) == "URL_TOO_LONG"

    # Within the limits (50 fields with these two), the same server answers.
    fewer = b"".join(b"X-N%d: 1\r\n" % i for i in range(48))
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: bank\r\nConnection: close\r\n" + fewer)
        sock.sendall(b"\r\n")
        response, _ = _hold(sock, CLOSE_WAIT_S)
    assert _status(response) == 200


def test_a_connection_that_never_finishes_its_head_is_closed(
    database_url: str, serve: Serve
) -> None:
    server = serve("--database-url", database_url, env={"BANK_HEADER_READ_TIMEOUT_S": "1"})
    with _connect(server) as silent, _connect(server) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: bank\r\n")
        response, slow_closed = _hold(slow, CLOSE_WAIT_S, trickle=b"X-Slow: 1\r\n")
        _, silent_closed = _hold(silent, CLOSE_WAIT_S)
    assert slow_closed, response
    assert silent_closed
    assert _status(response) == 408
    assert _error_code(response) == "REQUEST_TIMEOUT"


def test_a_body_never_finished_gets_408_and_is_closed(database_url: str, serve: Serve) -> None:
    server = serve("--database-url", database_url, env={"BANK_BODY_READ_TIMEOUT_S": "1"})
    head = b"POST %s HTTP/1.1\r\nHost: bank\r\nContent-Type: application/json\r\n"
    with _connect(server) as sock:
        sock.sendall(head % b"/graphql" + b"Content-Length: 1000\r\n\r\n{")
        response, closed = _hold(sock, CLOSE_WAIT_S, trickle=b" ")
    assert closed
    assert _status(response) == 408
    assert _error_code(response) == "REQUEST_TIMEOUT"

    # A route that answers without reading the body: its connection is closed all the same.
    with _connect(server) as sock:
        sock.sendall(head % b"/health" + b"Content-Length: 1000\r\n\r\n{")
        response, closed = _hold(sock, CLOSE_WAIT_S, trickle=b" ")
    assert closed
    assert _status(response) == 405


def test_idle_sockets_up_to_the_file_limit_do_not_lock_clients_out(
    database_url: str, serve: Serve
) -> None:
    server = serve(
        "--database-url",
        database_url,
        env={"BANK_HEADER_READ_TIMEOUT_S": "1"},
        fd_limit=256,
    )
    idle: list[socket.socket] = []
    try:
        for i in range(400):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            idle.append(sock)
            if i % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: bank\r\n")
        status = None
        deadline = time.monotonic() + 30
        while status != 200 and time.monotonic() < deadline:
            with _connect(server) as sock:
                sock.settimeout(2)
                try:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: bank\r\nConnection: close\r\n\r\n")
                    response, _ = _hold(sock, 3)
                except OSError:
                    response = b""
            status = _status(response) if response else None
        assert status == 200, server.output()
    finally:
        for sock in idle:
            sock.close()
    assert server.process.poll() is None, server.output()


def test_a_websocket_message_over_the_body_limit_closes_with_1009(
    database_url: str, serve: Serve
) -> None:
    server = serve("--database-url", database_url, env={"BANK_BODY_BYTES_MAX": "4096"})
    url = f"ws://127.0.0.1:{server.port}/graphql"
    with ws_connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:  # type: ignore[list-item]
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        query = "{ __typename }" + " " * 5000
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=CLOSE_WAIT_S)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


@pytest.mark.parametrize("path", ["/graphql/", "/health/", "/nowhere", "/graphql//"])
async def test_an_unknown_path_is_a_coded_404_never_a_redirect(
    gql: GraphQLClient, path: str
) -> None:
    response = await gql.http.get(path, headers={"Host": "elsewhere.example"})
    assert response.status_code == 404, response.headers
    assert "location" not in response.headers
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_a_limit_that_is_not_positive_stops_the_server_at_start() -> None:
    environ = {"DATABASE_URL": "postgresql://nowhere/none", "BANK_HEADER_READ_TIMEOUT_S": "0"}
    with pytest.raises(ValueError, match="header_read_timeout_s must be positive"):
        settings_from_env(environ)


@pytest.mark.parametrize(
    "request_bytes",
    [
        # Both framings at once: a smuggling attempt.
        b"POST /graphql HTTP/1.1\r\nHost: bank\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost bank\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32,  # TLS to a plain port
    ],
)
def test_a_malformed_request_gets_a_coded_400(
    database_url: str, serve: Serve, request_bytes: bytes
) -> None:
    server = serve("--database-url", database_url)
    with _connect(server) as sock:
        sock.sendall(request_bytes)
        response, closed = _hold(sock, CLOSE_WAIT_S)
    assert closed
    assert _status(response) == 400
    assert _error_code(response) == "BAD_REQUEST"


@pytest.mark.parametrize("path", ["/nope", "/health", "/graphql/"])
def test_a_websocket_to_an_unknown_path_is_a_coded_404(
    database_url: str, serve: Serve, path: str
) -> None:
    server = serve("--database-url", database_url)
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=CLOSE_WAIT_S)
    response = refused.value.response
    assert response.status_code == 404
    assert json.loads(response.body)["errors"][0]["extensions"]["code"] == "NOT_FOUND"
