"""The bounds of the live feeds (LIVE.md): a subscriber that stops reading is ended with
SUBSCRIBER_TOO_SLOW and resumes without loss; 1,000 idle subscriptions on one process all
get their events, and opening and closing them again does not grow the server; connections
dropped without a word release their subscriptions."""

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.live_client import (
    ACCOUNT_FEED,
    LEDGER_FEED,
    Bank,
    Edge,
    Socket,
    init_frame,
    module_server,
    until,
)
from tests.servers import Serve, Server
from tests.test_http_exhaustion import _rss_kib
from tests.test_websocket import PROTOCOL, counter, subscribe, ws_url

BUFFER = 256
BATCH = [("s-a", "s-b", 1), ("s-b", "s-a", 1)] * 16  # 64 entries, well under the buffer
MAX_BATCHES = 2_000  # far past what the sockets between the server and a stalled client hold
ENDED_GAUGE = "bank_graphql_subscriptions_ended_too_slow"
OPEN_GAUGE = "bank_graphql_subscriptions_open"


@pytest.fixture(scope="module")
def server(
    server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """With the default buffer; each test ends what it opened."""
    with module_server(server_url, template_db, tmp_path_factory.mktemp("live")) as server:
        yield server


def open_subscriptions(server: Server) -> float:
    return counter(server, OPEN_GAUGE)


async def stalled_client(server: Server) -> ClientConnection:
    """A connection that holds little in flight once its reader stops: a small receive
    window and small segments (which keep the server's send buffer small too), and one
    message queued in the client before it stops reading the socket."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.connect(("127.0.0.1", server.port))
    ws = await connect(
        ws_url(server),
        sock=sock,
        max_queue=1,
        compression=None,  # compressed, entries are small enough for thousands to fit
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
    )
    await ws.send(init_frame(None))
    assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    return ws


async def drain(ws: ClientConnection) -> tuple[list[Edge], dict[str, Any]]:
    """Read what the server sent: the events, then the message that ended them."""
    events: list[Edge] = []
    while True:
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        except TimeoutError:
            raise AssertionError(f"{len(events)} events, then nothing") from None
        if message["type"] != "next":
            return events, message
        events.append(message["payload"]["data"]["ledgerEntries"])


async def test_a_subscriber_that_stops_reading_is_ended_and_loses_nothing(
    database_url: str, serve: Serve
) -> None:
    server = serve("--database-url", database_url, env={"BANK_SUBSCRIBER_BUFFER": str(BUFFER)})
    bank = Bank(server)
    for account in ("s-a", "s-b"):
        await bank.open(account, 10**12)
    await bank.open("probe")
    reader = await Socket.open(server)
    await reader.subscribe("all", LEDGER_FEED)
    start = await reader.started("all", lambda: bank.deposit("probe", 1))
    slow = await stalled_client(server)
    await slow.send(subscribe("slow", LEDGER_FEED, {"after": start["cursor"]}))
    # It reads nothing while many entries commit, in requests of many entries each, until
    # the server ends it: how much the kernel buffers between them varies by machine.
    batches = 0
    while counter(server, ENDED_GAUGE) == 0:
        assert batches < MAX_BATCHES, "the stalled subscriber was never ended"
        await bank.batch(BATCH)
        batches += 1
    received, end = await drain(slow)
    assert end["id"] == "slow", end
    assert end["type"] == "error", end
    assert [e["extensions"]["code"] for e in end["payload"]] == ["SUBSCRIBER_TOO_SLOW"]
    assert 0 < len(received) < batches * len(BATCH) * 2

    async with await psycopg.AsyncConnection.connect(database_url) as db:
        cursor = await db.execute(
            "SELECT id::text FROM entries WHERE account_id IN ('s-a', 's-b') AND kind <> 'DEPOSIT'"
        )
        written = {row[0] for row in await cursor.fetchall()}
    assert len(written) == batches * len(BATCH) * 2

    def moved(edges: list[Edge]) -> list[str]:
        return [e["node"]["id"] for e in edges if e["node"]["accountId"] != "probe"]

    # Resumed from its last cursor: the rest, nothing twice, nothing missing.
    again = await Socket.open(server)
    await again.subscribe("rest", LEDGER_FEED, after=received[-1]["cursor"])
    await until(lambda: written <= set(moved(received + again.events["rest"])), "the rest")
    assert sorted(moved(received + again.events["rest"])) == sorted(written)
    # The reader that kept up saw every entry, and the server is well.
    await until(
        lambda: written <= set(moved(reader.events["all"])) or "all" in reader.ends,
        "the reader's entries",
    )
    assert "all" not in reader.ends, reader.ends["all"]
    assert sorted(moved(reader.events["all"])) == sorted(written)
    assert "rest" not in again.ends
    assert (await bank.http.get("/health")).status_code == 200
    # One commit of more entries than the buffer holds ends no subscriber that reads.
    await bank.batch(BATCH * 10)
    last = (await bank.transactions("s-b"))[-1]["node"]
    await until(lambda: delivered([reader], [last]) or "all" in reader.ends, "the big batch")
    assert "all" not in reader.ends, reader.ends["all"]
    await slow.close()
    for sock in (reader, again):
        await sock.close()
    await bank.aclose()


async def all_live(sockets: list[Socket], poke: Callable[[], Awaitable[object]]) -> None:
    """Write with `poke` until every subscription of `sockets` has had an event."""
    for _ in range(60):
        await poke()
        try:
            await until(lambda: all(all(s.events.values()) for s in sockets), "all", 1)
            return
        except AssertionError:
            continue
    raise AssertionError("some subscriptions never received an event")


async def open_many(server: Server, connections: int, query: str, **variables: Any) -> list[Socket]:
    sockets = await asyncio.gather(*(Socket.open(server) for _ in range(connections)))
    for sock in sockets:
        for op in range(10):
            await sock.subscribe(str(op), query, **variables)
    return list(sockets)


def delivered(sockets: list[Socket], nodes: list[Edge]) -> bool:
    """Has every subscription of `sockets` received all of `nodes`?"""
    for sock in sockets:
        for events in sock.events.values():
            seen = [event["node"] for event in events]
            if not all(node in seen for node in nodes):
                return False
    return True


async def test_a_burst_larger_than_the_buffer_does_not_end_a_reader(server: Server) -> None:
    bank = Bank(server)
    for account in ("burst-a", "burst-b"):
        await bank.open(account, 10**12)
    reader = await Socket.open(server)
    await reader.subscribe("all", LEDGER_FEED)
    await reader.started("all", lambda: bank.deposit("burst-a", 1))
    # The largest batch: twice as many entries as the default buffer holds.
    await bank.batch([("burst-a", "burst-b", 1), ("burst-b", "burst-a", 1)] * 500)
    last = (await bank.transactions("burst-b"))[-1]["node"]
    await until(lambda: delivered([reader], [last]) or "all" in reader.ends, "the batch")
    assert "all" not in reader.ends, reader.ends["all"]
    moved = [e for e in reader.events["all"] if e["node"]["kind"].startswith("TRANSFER")]
    assert len(moved) == 2_000
    await reader.close()
    await bank.aclose()


async def test_a_thousand_idle_subscriptions_and_no_growth(server: Server) -> None:
    bank = Bank(server)
    await bank.open("fan-a", 1_000_000)
    await bank.open("fan-b")
    sizes = []
    for round_ in range(4):
        sockets = await open_many(server, 100, LEDGER_FEED)
        await until(lambda: open_subscriptions(server) == 1_000, "1,000 open", every_s=0.1)
        await all_live(sockets, lambda: bank.deposit("fan-b", 1))
        if round_ == 0:  # one write reaches all 1,000
            out = await bank.transfer("fan-a", "fan-b", 1)
            incoming = (await bank.transactions("fan-b"))[-1]["node"]
            await until(partial(delivered, sockets, [out, incoming]), "the transfer everywhere")
        assert sum(len(s.events) for s in sockets) == 1_000
        assert not any(s.ends for s in sockets)
        sizes.append(_rss_kib(server.process.pid))
        await asyncio.gather(*(s.close() for s in sockets))
        await until(lambda: open_subscriptions(server) == 0, "none open", every_s=0.1)
    # Three more rounds of 1,000 after the first: bounded (no leak per subscription).
    assert sizes[-1] - sizes[0] < 30 * 1024, sizes
    await bank.aclose()


async def test_dropped_connections_release_their_subscriptions(server: Server) -> None:
    bank = Bank(server)
    await bank.open("drop-a")
    for round_ in range(3):
        sockets = await open_many(server, 3, ACCOUNT_FEED, id="drop-a")
        sockets += await open_many(server, 2, LEDGER_FEED)
        await all_live(sockets, lambda: bank.deposit("drop-a", 1))
        await until(lambda: open_subscriptions(server) == 50, "50 open", every_s=0.1)
        # Gone without a complete or a close frame: reset, or closed at the TCP level.
        for sock in sockets:
            if round_ % 2 == 0:
                sock.ws.transport.abort()
            else:
                sock.ws.transport.close()
        await asyncio.gather(*(s.reader for s in sockets))
    await until(lambda: open_subscriptions(server) == 0, "none open", every_s=0.1)
    # The server still serves, and counts the next one.
    sock = await Socket.open(server)
    await sock.subscribe("again", ACCOUNT_FEED, id="drop-a")
    await all_live([sock], lambda: bank.deposit("drop-a", 1))
    assert open_subscriptions(server) == 1
    await sock.close()
    await bank.aclose()
