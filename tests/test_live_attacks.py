"""The live feeds attacked from outside, through real `bank-graphql serve` processes: what a
client can make the server hold on to, and what it answers a subscription sent where none
can run."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import cloned_database
from tests.servers import Server, running
from tests.test_websocket import open_socket, over_http, receive, subscribe, ws_url

FEED = "subscription { ledgerEntries { cursor node { id accountId } } }"
GAUGE = "bank_graphql_subscriptions_open"


@pytest.fixture
def server(server_url: str, template_db: str, tmp_path: Path) -> Iterator[Server]:
    with (
        cloned_database(server_url, template_db, "bank_live_attack") as url,
        running("--database-url", url, "--no-graphiql", log=tmp_path / "server.log") as server,
    ):
        yield server


def _open_subscriptions(server: Server) -> float:
    text = httpx.get(f"{server.base}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == GAUGE:
                return sample.value
    raise AssertionError(f"no {GAUGE} on /metrics")


async def _settled_open_subscriptions(server: Server) -> float:
    """The gauge once it stops at 0, or what it still shows after a generous while (the
    server ends a subscription asynchronously after `complete` or a disconnect)."""
    for _ in range(100):
        if (found := _open_subscriptions(server)) == 0:
            return found
        await asyncio.sleep(0.1)
    return _open_subscriptions(server)


async def test_a_subscription_completed_right_after_subscribe_is_ended(server: Server) -> None:
    """`complete` arriving before the subscription's resolver has started must still end
    it: otherwise it runs on unseen, holds one of the connection's operation slots, and
    outlives the connection, past the bound of 10 subscriptions per connection."""
    async with await open_socket(ws_url(server)) as ws:
        for n in range(10):
            await ws.send(subscribe(f"s{n}", FEED))
            await ws.send(json.dumps({"id": f"s{n}", "type": "complete"}))
        await ws.send(subscribe("q", "{ __typename }"))
        answer = await receive(ws)
        assert answer == {"id": "q", "type": "next", "payload": {"data": {"__typename": "Query"}}}
        assert await _settled_open_subscriptions(server) == 0
    assert await _settled_open_subscriptions(server) == 0


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_subscription_over_http_is_refused_with_a_code_not_an_internal_error(
    server: Server, method: str
) -> None:
    """Subscriptions run over the WebSocket only; over HTTP one is a client's mistake, to be
    told so with a code of the client's side, not an internal error with a stack trace in
    the server's log."""
    if method == "POST":
        answer = over_http(server, FEED)
    else:
        answer = httpx.get(f"{server.base}/graphql", params={"query": FEED}, timeout=30).json()
    assert answer.get("data") is None, answer
    codes = [error["extensions"]["code"] for error in answer["errors"]]
    assert codes, answer
    assert "INTERNAL_SERVER_ERROR" not in codes, answer
    assert "Traceback" not in server.log.read_text(errors="replace")
