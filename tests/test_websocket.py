"""GraphQL over WebSocket (`graphql-transport-ws`) against a real `bank-graphql serve`: the
same answers, limits, error codes and log line as HTTP; protocol errors close with 44xx.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bank_graphql.edge.app import create_app
from bank_graphql.edge.graphql_ws import CONNECTION_INIT_TIMEOUT_S
from bank_graphql.edge.settings import Settings
from tests.conftest import cloned_database
from tests.servers import Serve, Server, running
from tests.test_request_pipeline import MISSPELT, suggestion_free

PROTOCOL = "graphql-transport-ws"
STACK_TRACE_MARKERS = ("Traceback", 'File "')
INTERNAL_TEXTS = ("PostgreSQL", "NUL", "0x00", "bigint", "out of range", "Assertion", "psycopg")


ALLOWED_ORIGIN = "http://app.example"


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/graphql"


@pytest.fixture(scope="module")
def server(
    server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server for the module's tests, on a database of its own (tests use their own ids)."""
    log = Path(tmp_path_factory.mktemp("ws")) / "server.log"
    with (
        cloned_database(server_url, template_db, "bank_ws") as url,
        running(
            "--database-url",
            url,
            "--clock",
            "client",
            "--no-graphiql",
            "--cors-origins",
            ALLOWED_ORIGIN,
            log=log,
        ) as server,
    ):
        yield server


# --- a small client ----------------------------------------------------------------------


async def open_socket(url: str, *, init: bool = True) -> ClientConnection:
    ws = await connect(url, subprotocols=[PROTOCOL])  # type: ignore[list-item]
    if init:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    return ws


def subscribe(
    operation_id: str, query: str, variables: dict[str, Any] | None = None, name: str | None = None
) -> str:
    payload = {"query": query, "variables": variables, "operationName": name}
    return json.dumps({"id": operation_id, "type": "subscribe", "payload": payload})


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), 30)
    assert isinstance(frame, str), f"a binary frame: {frame!r}"  # the protocol speaks text
    for marker in STACK_TRACE_MARKERS:
        assert marker not in frame, frame
    message: dict[str, Any] = json.loads(frame)
    return message


async def until_done(ws: ClientConnection, operation_id: str) -> list[dict[str, Any]]:
    """Messages of `operation_id` up to its `complete` or `error`."""
    messages = []
    while True:
        message = await receive(ws)
        assert message.get("id") == operation_id, message
        messages.append(message)
        if message["type"] in {"complete", "error"}:
            return messages


async def over_ws(
    server: Server, query: str, variables: dict[str, Any] | None = None, name: str | None = None
) -> dict[str, Any]:
    """One operation over a fresh connection, shaped like an HTTP answer."""
    async with await open_socket(ws_url(server)) as ws:
        await ws.send(subscribe("op", query, variables, name))
        messages = await until_done(ws, "op")
    if messages[-1]["type"] == "error":
        assert len(messages) == 1, messages
        return {"data": None, "errors": messages[-1]["payload"]}
    assert [m["type"] for m in messages] == ["next", "complete"], messages
    payload: dict[str, Any] = messages[0]["payload"]
    return payload


def over_http(
    server: Server, query: str, variables: dict[str, Any] | None = None, name: str | None = None
) -> dict[str, Any]:
    body = {"query": query, "variables": variables, "operationName": name}
    answer: dict[str, Any] = httpx.post(f"{server.base}/graphql", json=body, timeout=30).json()
    return answer


async def close_of(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes; its close code and reason."""
    try:
        while True:
            await receive(ws)
    except ConnectionClosed:
        pass
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason


def assert_coded_and_masked(errors: list[dict[str, Any]]) -> None:
    assert errors
    for error in errors:
        assert error["extensions"]["code"], error
        for text in INTERNAL_TEXTS:
            assert text.lower() not in error["message"].lower(), error


def server_log(server: Server, since: int = 0) -> str:
    """What the server logged, from character `since` on (tests share a server)."""
    return server.log.read_text(errors="replace")[since:]


def log_lines(server: Server, since: int = 0) -> list[dict[str, Any]]:
    lines = []
    for line in server_log(server, since).splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def assert_log_clean(server: Server, since: int = 0) -> None:
    text = server_log(server, since)
    assert "Traceback" not in text, text[-6000:]
    lines = log_lines(server, since)
    assert not [line for line in lines if line.get("level") in {"ERROR", "CRITICAL"}], text
    assert lines, "nothing logged"


# --- the same answers as HTTP ------------------------------------------------------------

OPEN = """mutation Open($id: ID!) {
  createAccount(input: {id: $id, timestamp: 1000}) { account { id } errors { code } }
  deposit(input: {accountId: $id, amount: 500, timestamp: 1000}) { balance errors { code } }
}"""
LOOK = "query Look($id: ID!) { account(id: $id) { id balance transactions { nodes { amount } } } }"


async def test_queries_and_mutations_answer_as_over_http(server: Server) -> None:
    assert await over_ws(server, OPEN, {"id": "ws-a"}, "Open") == {
        "data": {
            "createAccount": {"account": {"id": "ws-a"}, "errors": []},
            "deposit": {"balance": 500, "errors": []},
        }
    }
    assert over_http(server, OPEN, {"id": "ws-b"}) == {
        "data": {
            "createAccount": {"account": {"id": "ws-b"}, "errors": []},
            "deposit": {"balance": 500, "errors": []},
        }
    }
    # A refused mutation: the same UserError either way.
    again = 'mutation { createAccount(input: {id: "ws-a"}) { account { id } errors { code } } }'
    refused = {"createAccount": {"account": None, "errors": [{"code": "ACCOUNT_ALREADY_EXISTS"}]}}
    assert await over_ws(server, again) == over_http(server, again) == {"data": refused}
    expected = {
        "account": {"id": "ws-a", "balance": 500, "transactions": {"nodes": [{"amount": 500}]}}
    }
    assert await over_ws(server, LOOK, {"id": "ws-a"}) == {"data": expected}
    assert over_http(server, LOOK, {"id": "ws-a"}) == {"data": expected}


def _nested(levels: int) -> str:
    return (
        "{ "
        + "accounts { nodes { transactions { edges { node { " * levels
        + "id"
        + " } } } } }" * levels
        + " }"
    )


COSTLY = (
    "{ accounts(first: 100) { nodes { transactions(first: 100) { nodes { id } }"
    " payments(first: 100) { nodes { id } } a: transactions(first: 100) { nodes { id } } } } }"
)
ALIASES = "{ " + " ".join(f"a{i}: __typename" for i in range(251)) + " }"
DEPOSIT = 'mutation($a: Money!) { deposit(input: {accountId: "x", amount: $a}) { balance } }'
REFUSED: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("syntax error", '{ account(id: ) { id ', None, None),
    ("unknown field", '{ account(id: "x") { id password } }', None, None),
    ("bad variable", DEPOSIT, {"a": "100"}, None),
    ("money out of range", DEPOSIT, {"a": 2**64}, None),
    ("NUL in a cursor", '{ accounts(after: "YToA") { nodes { id } } }', None, None),
    ("too deep", _nested(3), None, None),
    ("too costly", COSTLY, None, None),
    ("too many tokens", "{ " + "__typename " * 10_001 + "}", None, None),
    ("too many aliases", ALIASES, None, None),
    ("several operations, no name", "query A { __typename } query B { __typename }", None, None),
    ("unknown operation name", "query A { __typename }", None, "B"),
    ("empty document", "", None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "variables", "name"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
async def test_refusals_carry_the_same_codes_and_words_as_over_http(
    server: Server, query: str, variables: dict[str, Any] | None, name: str | None
) -> None:
    answer = await over_ws(server, query, variables, name)
    assert answer.get("data") is None, answer
    assert_coded_and_masked(answer["errors"])
    expected = over_http(server, query, variables, name)
    assert [(e["message"], e["extensions"]) for e in answer["errors"]] == [
        (e["message"], e["extensions"]) for e in expected["errors"]
    ]


def counter(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.base}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_a_syntax_error_logs_one_line_and_no_traceback(server: Server) -> None:
    since = len(server_log(server))
    parse_failures = counter(server, "bank_graphql_errors_total", code="GRAPHQL_PARSE_FAILED")
    queries = counter(server, "bank_graphql_requests_total", operation_type="query", outcome="ok")
    answer = await over_ws(server, "{ account(id: ) ", None, None)
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["GRAPHQL_PARSE_FAILED"]
    await over_ws(server, "query WsLogged { __typename }")
    # Counted as over HTTP.
    assert (
        counter(server, "bank_graphql_errors_total", code="GRAPHQL_PARSE_FAILED")
        == parse_failures + 1
    )
    assert (
        counter(server, "bank_graphql_requests_total", operation_type="query", outcome="ok")
        == queries + 1
    )
    lines = [line for line in log_lines(server, since) if line["message"] == "graphql operation"]
    assert [line.get("error_codes") for line in lines] == [["GRAPHQL_PARSE_FAILED"], None]
    assert lines[0]["outcome"] == "error"
    assert lines[1]["operation_name"] == "WsLogged"
    assert lines[1]["operation_type"] == "query"
    assert lines[1]["outcome"] == "ok"
    assert_log_clean(server, since)


async def test_a_total_past_bigint_answers_over_websocket_as_over_http(server: Server) -> None:
    """Moving 2^53 - 1 back and forth past where a running total would overflow bigint: the
    total saturates, and both transports answer the same, without errors."""
    money = 2**53 - 1
    assert over_http(server, OPEN.replace("500", str(money)), {"id": "big-a"})["data"]
    assert over_http(server, OPEN.replace("amount: 500, ", "amount: 0, "), {"id": "big-b"})["data"]
    batch = (
        "mutation($t: [TransferInput!]!) { transferBatch(input: {transfers: $t})"
        " { errors { code } results { errors { code } } } }"
    )
    items = [
        {"sourceAccountId": a, "targetAccountId": b, "amount": money}
        for a, b in [("big-a", "big-b"), ("big-b", "big-a")] * 500
    ]
    for _ in range(2):
        over_http(server, batch, {"t": items})
    answer = await over_ws(server, batch, {"t": items[:100]})
    assert "errors" not in answer, answer
    assert answer["data"]["transferBatch"]["errors"] == []
    outgoing = '{ account(id: "big-a") { outgoing } }'
    answer = await over_ws(server, outgoing)
    assert answer == over_http(server, outgoing) == {"data": {"account": {"outgoing": money}}}


# --- protocol errors ---------------------------------------------------------------------


def _subscribe_frame(**fields: object) -> str:
    return json.dumps({"type": "subscribe", **fields})


TYPENAME = {"query": "{ __typename }"}
BAD_FRAMES: list[tuple[str, str | bytes]] = [
    ("not JSON", "not json"),
    ("binary frame", b'{"type": "ping"}'),
    ("JSON array", "[1, 2]"),
    ("JSON string", '"ping"'),
    ("no type", '{"id": "1"}'),
    ("type not a string", '{"type": 1}'),
    ("unknown type", '{"type": "start", "id": "1"}'),
    ("payload null", '{"id": "1", "type": "subscribe", "payload": null}'),
    ("payload without query", '{"id": "1", "type": "subscribe", "payload": {}}'),
    ("query not a string", '{"id": "1", "type": "subscribe", "payload": {"query": 1}}'),
    ("variables not an object", _subscribe_frame(id="1", payload={**TYPENAME, "variables": [1]})),
    ("operationName not text", _subscribe_frame(id="1", payload={**TYPENAME, "operationName": 1})),
    ("no id", _subscribe_frame(payload=TYPENAME)),
    ("id not a string", _subscribe_frame(id=1, payload=TYPENAME)),
    ("empty id", _subscribe_frame(id="", payload=TYPENAME)),
    ("huge id", _subscribe_frame(id="x" * 100_000, payload=TYPENAME)),
    ("complete without id", '{"type": "complete"}'),
    ("ping payload a string", '{"type": "ping", "payload": "x"}'),
    ("deeply nested JSON", '{"type": "ping", "payload": ' + '{"a": ' * 5000 + "1" + "}" * 5001),
]  # fmt: skip


async def test_frames_the_protocol_does_not_allow_close_with_4400(server: Server) -> None:
    since = len(server_log(server))
    for name, frame in BAD_FRAMES:
        async with await open_socket(ws_url(server)) as ws:
            await ws.send(frame)
            code, reason = await close_of(ws)
        assert code == 4400, (name, code, reason)
        assert reason, name
    # Before the handshake of the protocol, too.
    async with await open_socket(ws_url(server), init=False) as ws:
        await ws.send('{"type": "connection_init", "payload": [1]}')
        assert (await close_of(ws))[0] == 4400
    assert_log_clean(server, since)
    refused = [line for line in log_lines(server, since) if line.get("close_code") == 4400]
    assert len(refused) == len(BAD_FRAMES) + 1, refused
    assert all(line["error_codes"] == ["BAD_REQUEST"] for line in refused), refused


async def test_the_protocols_own_refusals(server: Server) -> None:
    since = len(server_log(server))
    # An operation before connection_init: 4401.
    async with await open_socket(ws_url(server), init=False) as ws:
        await ws.send(subscribe("1", "{ __typename }"))
        assert (await close_of(ws))[0] == 4401
    # connection_init twice: 4429.
    async with await open_socket(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert (await close_of(ws))[0] == 4429
    # ping gets pong, and a connection_init with a null payload is fine.
    async with await open_socket(ws_url(server), init=False) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": None}))
        assert await receive(ws) == {"type": "connection_ack"}
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}
    assert_log_clean(server, since)


async def test_connection_init_is_awaited_for_a_bounded_time(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, sweeper_enabled=False))
    endpoint = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/graphql")
    bound = endpoint.connection_init_wait_timeout  # type: ignore[attr-defined]
    assert bound == timedelta(seconds=CONNECTION_INIT_TIMEOUT_S)
    # The same rule, made short enough for a test, on the app in this process.
    endpoint.connection_init_wait_timeout = timedelta(seconds=0.2)  # type: ignore[attr-defined]
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"sec-websocket-protocol", PROTOCOL.encode())],
        "subprotocols": [PROTOCOL],
    }
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await incoming.put({"type": "websocket.connect"})
    async with app.router.lifespan_context(app):
        task = asyncio.create_task(app(scope, incoming.get, outgoing.put))
        assert (await asyncio.wait_for(outgoing.get(), 10))["type"] == "websocket.accept"
        closed = await asyncio.wait_for(outgoing.get(), 10)  # no connection_init sent
        await incoming.put({"type": "websocket.disconnect", "code": 4408})
        await asyncio.wait_for(task, 10)
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 4408


async def test_the_legacy_graphql_ws_subprotocol_is_refused(server: Server) -> None:
    ws = await connect(ws_url(server), subprotocols=["graphql-ws"])  # type: ignore[list-item]
    with contextlib.suppress(ConnectionClosed):
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert (await close_of(ws))[0] == 4406


# --- no suggestions without introspection --------------------------------------------------


async def test_without_introspection_no_error_suggests_a_name(
    serve: Serve, database_url: str
) -> None:
    hidden = serve("--database-url", database_url, "--no-introspection", "--no-graphiql")
    for name, query, variables in MISSPELT:
        answer = await over_ws(hidden, query, variables)
        assert answer.get("data") is None, (name, answer)
        assert_coded_and_masked(answer["errors"])
        assert suggestion_free(answer["errors"]), (name, answer)
        assert answer == over_http(hidden, query, variables), name


# --- bounds on one connection --------------------------------------------------------------


@pytest.fixture
async def held_lock(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A transaction holding the row lock of account `hot`; released when the test ends."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        yield conn
        await conn.rollback()


DEPOSIT_HOT = (
    'mutation { deposit(input: {accountId: "hot", amount: 1}) { balance errors { code } } }'
)


async def test_operations_per_connection_are_bounded_and_finish_after_complete(
    serve: Serve, database_url: str, held_lock: psycopg.AsyncConnection[Any]
) -> None:
    busy = serve(
        "--database-url", database_url, "--no-graphiql", env={"BANK_LOCK_TIMEOUT_MS": "60000"}
    )
    over_http(busy, 'mutation { createAccount(input: {id: "hot"}) { errors { code } } }')
    await held_lock.execute("SELECT 1 FROM accounts WHERE id = 'hot' FOR UPDATE")
    async with await open_socket(ws_url(busy)) as ws:
        for i in range(10):
            await ws.send(subscribe(str(i), DEPOSIT_HOT))
        # The eleventh waits for no one: refused at once, with a code.
        await ws.send(subscribe("10", DEPOSIT_HOT))
        refused = await receive(ws)
        assert refused["id"] == "10", refused
        assert refused["type"] == "error", refused
        assert [e["extensions"]["code"] for e in refused["payload"]] == ["TOO_MANY_OPERATIONS"]
        # The client stops listening to one: it still runs to the end, as over HTTP.
        await ws.send(json.dumps({"id": "0", "type": "complete"}))
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}
        await held_lock.rollback()
        done = {}
        while len(done) < 9:
            message = await receive(ws)
            if message["type"] == "next":
                assert message["payload"]["data"]["deposit"]["errors"] == [], message
                done[message["id"]] = message
        assert sorted(done) == [str(i) for i in range(1, 10)]
    for _ in range(100):
        data = over_http(busy, '{ account(id: "hot") { balance } }')["data"]
        if data["account"]["balance"] == 10:
            break
        await asyncio.sleep(0.05)
    assert data == {"account": {"balance": 10}}
    assert_log_clean(busy)


async def test_a_page_of_an_origin_cors_allows_may_open_a_websocket(server: Server) -> None:
    """What --cors-origins lets a page post, it lets the page subscribe to; other origins'
    pages are refused at the handshake (a browser sends the user's cookies with it)."""
    async with connect(
        ws_url(server),
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
        origin=ALLOWED_ORIGIN,  # type: ignore[arg-type]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            ws_url(server),
            subprotocols=[PROTOCOL],  # type: ignore[list-item]
            origin="http://elsewhere.example",  # type: ignore[arg-type]
        )
    assert refused.value.response.status_code == 403
