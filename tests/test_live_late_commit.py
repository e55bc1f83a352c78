"""The global feed's hard case: an entry that commits late, with a smaller id than entries
already delivered, is still delivered, and a cursor taken before it arrived resumes onto it
(a feed ordered by id alone would skip it for good)."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.asyncio.client import ClientConnection

from bank_graphql.ledger import audit_books
from tests.conftest import cloned_database
from tests.servers import Server, running
from tests.test_websocket import open_socket, over_http, receive, subscribe, ws_url

FEED = (
    "subscription($after: String) "
    "{ ledgerEntries(after: $after) { cursor node { id accountId kind amount } } }"
)


@pytest.fixture
def live(server_url: str, template_db: str, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    with (
        cloned_database(server_url, template_db, "bank_live") as url,
        running("--database-url", url, "--no-graphiql", log=tmp_path / "server.log") as server,
    ):
        yield server, url


def _mutate(server: Server, mutation: str) -> None:
    answer = over_http(server, f"mutation {{ {mutation} {{ errors {{ code }} }} }}")
    assert answer["data"] is not None, answer
    assert next(iter(answer["data"].values()))["errors"] == [], answer


async def _next_entry(ws: ClientConnection) -> dict[str, Any]:
    message = await receive(ws)
    assert message["type"] == "next", message
    edge: dict[str, Any] = message["payload"]["data"]["ledgerEntries"]
    return edge


async def test_an_entry_committed_late_with_a_smaller_id_is_delivered_and_resumed_onto(
    live: tuple[Server, str],
) -> None:
    server, url = live
    for account in ("late", "early"):
        _mutate(server, f'createAccount(input: {{id: "{account}"}})')
    async with await open_socket(ws_url(server)) as ws:
        await ws.send(subscribe("feed", FEED))
        async with await psycopg.AsyncConnection.connect(url) as held:
            # A deposit whose transaction stays open: its entry has the smaller id.
            wall_ms = int(time.time() * 1000)
            await held.execute(
                "SELECT ledger_deposit('test', 'late', 7, NULL, %s, NULL, NULL)", (wall_ms,)
            )
            late_id = await (await held.execute("SELECT max(id) FROM entries")).fetchone()
            _mutate(server, 'deposit(input: {accountId: "early", amount: 5})')
            early = await _next_entry(ws)
            assert early["node"]["accountId"] == "early"
            assert late_id is not None
            assert int(early["node"]["id"]) > late_id[0]
            await held.commit()
        late = await _next_entry(ws)
        assert (late["node"]["accountId"], late["node"]["id"]) == ("late", str(late_id[0]))
    # Resumed from the cursor of the entry delivered before it: the late one comes next.
    async with await open_socket(ws_url(server)) as ws:
        await ws.send(subscribe("again", FEED, {"after": early["cursor"]}))
        resumed = await _next_entry(ws)
        assert resumed == late
    async with await psycopg.AsyncConnection.connect(url) as conn:
        assert await audit_books(conn) == []
