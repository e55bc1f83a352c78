"""Property tests of GraphQL over WebSocket against a real `bank-graphql serve`: generated
sessions of `graphql-transport-ws` frames, well-formed or not, in any order.

Whatever arrives, the server sends only text frames of JSON objects, never a stack trace
or its own internal text, a code on every error, no schema name suggested (introspection
is off), and closes a connection only with a 44xx code. Afterwards the books balance, the
log holds no error, and the server still answers over HTTP and WebSocket.

`BANK_FUZZ_EXAMPLES=N` runs N random examples per property (see tests/test_fuzz.py).
"""

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from bank_graphql.ledger import audit_books
from tests.conftest import cloned_database
from tests.servers import Server, running
from tests.test_fuzz import (
    FUZZ,
    FUZZ_EXAMPLES,
    NASTY_TEXT,
    OPENED,
    STACK_TRACE_MARKERS,
    documents,
    junk_json,
    mutation_requests,
    opening_requests,
    texts,
)

PROTOCOL = "graphql-transport-ws"
# Words of the server's own failures, never for a client's eyes.
INTERNAL_TEXTS = ("PostgreSQL", "psycopg", "bigint out of range", "AssertionError", "Exception in")
SERVER_TYPES = {"connection_ack", "ping", "pong", "next", "error", "complete"}


@dataclass(frozen=True)
class Fuzzed:
    """The server, its database, and what it has logged so far."""

    server: Server
    database_url: str

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/graphql"

    def post(self, payload: object) -> Any:
        return httpx.post(f"{self.server.base}/graphql", json=payload, timeout=30).json()


@pytest.fixture(scope="module")
def fuzzed(
    server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    log = Path(tmp_path_factory.mktemp("wsfuzz")) / "server.log"
    with cloned_database(server_url, template_db, "bank_wsfuzz") as url:
        args = ("--database-url", url, "--clock", "client", "--no-introspection", "--no-graphiql")
        with running(*args, log=log) as server:
            yield _fuzzed_with_accounts(Fuzzed(server, url))


def _fuzzed_with_accounts(fuzz: Fuzzed) -> Fuzzed:
    for request in opening_requests():
        body = fuzz.post(request)
        assert body == OPENED, body
    return fuzz


# --- frames ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One frame a client sends, and what it asks of the server."""

    data: str | bytes
    subscribes: str | None = None  # a well-formed subscribe of this id
    completes: str | None = None  # a well-formed complete of this id
    pings: bool = False


operation_ids = st.one_of(
    st.sampled_from(["1", "2", "3", "a"]),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
    st.integers(0, 10**30).map(str),
    st.sampled_from(["x" * 128, "\x00", "🙂" * 40]),
)
operations = st.one_of(
    mutation_requests(),
    mutation_requests(),
    documents().map(lambda d: {"query": d}),
    st.sampled_from(
        [
            {"query": "{ accounts(first: 100) { nodes { id balance outgoing } } }"},
            {"query": "query A { __typename } query B { __typename }"},
            {"query": "query A { __typename }", "operationName": "B"},
            {"query": "{ account(id: ) "},
            {"query": ""},
            {"query": "{ __schema { types { name } } }"},
        ]
    ),
)


@st.composite
def subscribe_frames(draw: st.DrawFn) -> Frame:
    operation_id = draw(operation_ids)
    payload = draw(operations)
    frame = json.dumps({"id": operation_id, "type": "subscribe", "payload": payload})
    return Frame(frame, subscribes=operation_id)


def _message(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields})


junk_frames = st.one_of(
    st.binary(max_size=64).map(lambda b: Frame(b)),
    st.sampled_from(["", "{", "null", "[]", "{}", '{"type": null}', "\x00"]).map(Frame),
    texts.map(Frame),
    junk_json.map(lambda j: Frame(json.dumps(j))),
    st.builds(
        lambda kind, operation_id, payload: Frame(_message(kind, id=operation_id, payload=payload)),
        st.sampled_from(
            ["subscribe", "complete", "next", "error", "connection_ack", "start", "stop", "data"]
        ),
        st.one_of(st.none(), junk_json, st.just("x" * 100_000)),
        junk_json,
    ),
    st.sampled_from(NASTY_TEXT).map(lambda t: Frame(_message("subscribe", id=t, payload=None))),
)
good_frames = st.one_of(
    subscribe_frames(),
    subscribe_frames(),
    subscribe_frames(),
    subscribe_frames(),
    operation_ids.map(lambda i: Frame(_message("complete", id=i), completes=i)),
    st.sampled_from(
        [
            Frame(_message("ping"), pings=True),
            Frame(_message("ping", payload={"x": 1}), pings=True),
            Frame(_message("pong")),
        ]
    ),
)
# What closes the connection: junk, and a second connection_init.
bad_frames = st.one_of(junk_frames, st.just(Frame(_message("connection_init"))))


@st.composite
def sessions(draw: st.DrawFn, size_max: int) -> tuple[bool, list[Frame]]:
    """Mostly well-formed frames (in any order, ids repeated), now and then one that is not."""
    init = draw(st.integers(0, 9)) > 0
    sent = draw(st.lists(good_frames, max_size=size_max))
    if draw(st.integers(0, 3)) == 0:
        sent.insert(draw(st.integers(0, len(sent))), draw(bad_frames))
    return init, sent


# --- one session -------------------------------------------------------------------------


def check_frame(frame: str | bytes) -> dict[str, Any]:
    """A frame from the server: text, a JSON object of the protocol, coded errors."""
    assert isinstance(frame, str), f"a binary frame: {frame[:200]!r}"
    shown = frame[:500]
    for marker in STACK_TRACE_MARKERS:
        assert marker not in frame, shown
    message = json.loads(frame)
    assert isinstance(message, dict), shown
    assert message.get("type") in SERVER_TYPES, shown
    errors = []
    if message["type"] == "error":
        errors = message["payload"]
    elif message["type"] == "next":
        assert "data" in message["payload"], shown
        errors = message["payload"].get("errors") or []
    assert isinstance(errors, list), shown
    if message["type"] == "error":
        assert errors, shown
    for error in errors:
        assert isinstance(error.get("message"), str), shown
        for text in INTERNAL_TEXTS:
            assert text not in error["message"], shown
        assert "did you mean" not in error["message"].lower(), shown
        code = (error.get("extensions") or {}).get("code")
        assert isinstance(code, str), shown
        assert code, shown
        assert code != "INTERNAL_SERVER_ERROR", shown
    return message


def run_session(url: str, init: bool, sent: list[Frame]) -> None:
    """Send `sent`, then read until every operation that must answer has, and every ping
    has its pong; or until the server closes, with a 44xx code."""
    waiting: Counter[str] = Counter()
    pings = 0
    with connect(url, subprotocols=[PROTOCOL], max_size=None, proxy=None) as ws:  # type: ignore[list-item]
        try:
            for frame in [Frame(_message("connection_init"))] * init + sent:
                ws.send(frame.data)
                if frame.subscribes is not None:
                    waiting[frame.subscribes] += 1
                if frame.completes is not None:
                    waiting.pop(frame.completes, None)
                pings += frame.pings
            ws.send(_message("ping"))
            pings += 1
            _read_until_done(ws, waiting, pings)
        except ConnectionClosed:
            _assert_closed_by_protocol(ws)


def _read_until_done(ws: ClientConnection, waiting: Counter[str], pings: int) -> None:
    deadline = time.monotonic() + 30
    while pings or +waiting:
        try:
            frame = ws.recv(timeout=max(deadline - time.monotonic(), 0.01))
        except TimeoutError:
            pytest.fail(f"no answer: waiting for {dict(+waiting)} and {pings} pongs")
        message = check_frame(frame)
        if message["type"] == "pong":
            pings -= 1
        elif message["type"] in {"complete", "error"} and waiting[message["id"]] > 0:
            waiting[message["id"]] -= 1


def _assert_closed_by_protocol(ws: ClientConnection) -> None:
    # Whatever the server sent before it closed is checked too.
    while True:
        try:
            check_frame(ws.recv(timeout=0))
        except (TimeoutError, ConnectionClosed):
            break
    code = ws.close_code
    assert code is not None, ws.close_reason
    assert 4400 <= code < 4500, (code, ws.close_reason)


# --- the properties ----------------------------------------------------------------------


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=FUZZ_EXAMPLES or examples)


def test_generated_sessions(fuzzed: Fuzzed) -> None:
    @fuzz(80)
    @given(session=sessions(size_max=8))
    @example(session=(True, [Frame(_message("subscribe", id="1", payload=None))]))
    @example(session=(True, [Frame(b"\x00\x01")]))
    @example(session=(True, [Frame("not json")]))
    def prop(session: tuple[bool, list[Frame]]) -> None:
        run_session(fuzzed.url, *session)

    prop()
    after_fuzzing(fuzzed)


@st.composite
def bursts(draw: st.DrawFn) -> list[Frame]:
    """Many operations at once, mostly of distinct ids, with well-formed frames between."""
    sent = []
    for index in range(draw(st.integers(8, 30))):
        if draw(st.integers(0, 4)) == 0:
            sent.append(draw(good_frames))
            continue
        payload = draw(operations)
        frame = json.dumps({"id": f"op{index}", "type": "subscribe", "payload": payload})
        sent.append(Frame(frame, subscribes=f"op{index}"))
    return sent


def test_many_operations_on_one_connection(fuzzed: Fuzzed) -> None:
    """Bursts past the per-connection bound, with completes and duplicates in between."""

    @fuzz(30)
    @given(sent=bursts())
    def prop(sent: list[Frame]) -> None:
        run_session(fuzzed.url, True, sent)

    prop()
    after_fuzzing(fuzzed)


def after_fuzzing(fuzzed: Fuzzed) -> None:
    """The books balance, the log holds no error, and the server still answers."""

    async def audit() -> None:
        async with await psycopg.AsyncConnection.connect(
            fuzzed.database_url, autocommit=True
        ) as conn:
            assert await audit_books(conn) == []
            cursor = await conn.execute(
                "SELECT count(*) FROM accounts WHERE balance < 0 OR outgoing < 0"
            )
            assert await cursor.fetchone() == (0,)

    # Operations a client stopped listening to may still be finishing.
    time.sleep(0.5)
    asyncio.run(audit())
    body = fuzzed.post({"query": "{ accounts(first: 100) { nodes { id balance } } }"})
    assert "errors" not in body, body
    assert body["data"]["accounts"]["nodes"]
    run_session(fuzzed.url, True, [Frame(_message("ping"), pings=True)])
    log = fuzzed.server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-6000:]
    assert '"level": "ERROR"' not in log, log[-6000:]
