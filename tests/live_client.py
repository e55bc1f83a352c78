"""Clients for the live feed tests against a real `bank-graphql serve`: `Bank` writes and
reads over HTTP, `Socket` holds one graphql-transport-ws connection whose subscriptions'
events a reader task collects as they come."""

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import cloned_database
from tests.servers import Server, running
from tests.test_websocket import PROTOCOL, subscribe, ws_url

Edge = dict[str, Any]
"""`{"cursor": ..., "node": {...LedgerEntry}}`, as a subscription event and as an edge of
Account.transactions."""

ENTRY = "id accountId timestamp kind amount balanceAfter counterpartyId paymentId"
ACCOUNT_FEED = (
    "subscription($id: ID!, $after: String) {"
    f" accountEntries(accountId: $id, after: $after) {{ cursor node {{ {ENTRY} }} }} }}"
)
LEDGER_FEED = (
    "subscription($after: String) {"
    f" ledgerEntries(after: $after) {{ cursor node {{ {ENTRY} }} }} }}"
)
PAGE = (
    "query($id: ID!, $first: Int, $after: String) { account(id: $id) {"
    " transactions(first: $first, after: $after) {"
    f" edges {{ cursor node {{ {ENTRY} }} }} pageInfo {{ hasNextPage endCursor }} }} }} }}"
)


@contextmanager
def module_server(server_url: str, template_db: str, folder: Path) -> Iterator[Server]:
    """A server for a module's tests, on a database of its own (tests use their own ids)."""
    with (
        cloned_database(server_url, template_db, "bank_live") as url,
        running("--database-url", url, "--no-graphiql", log=folder / "server.log") as server,
    ):
        yield server


async def until(
    check: Callable[[], bool], what: str, timeout_s: float = 30, every_s: float = 0.01
) -> None:
    """Wait until `check()` holds; fail saying `what` was awaited after a generous while."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(every_s)


class Bank:
    """Mutations and reads over HTTP, each asserted free of GraphQL and user errors."""

    def __init__(self, server: Server, key: str | None = None) -> None:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        self.http = httpx.AsyncClient(base_url=server.base, headers=headers, timeout=60)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        return body

    async def write(self, field: str, input_: dict[str, Any], selection: str = "") -> Any:
        """`field(input: $input) { errors { code } selection }`; insists on no errors."""
        kind = field[0].upper() + field[1:]
        query = (
            f"mutation($input: {kind}Input!) {{ {field}(input: $input)"
            f" {{ errors {{ code }} {selection} }} }}"
        )
        answer = (await self.post(query, {"input": input_}))["data"][field]
        assert answer["errors"] == [], (field, input_, answer)
        return answer

    async def open(self, account: str, balance: int = 0, ts: int | None = None) -> None:
        await self.write("createAccount", {"id": account, "timestamp": ts})
        if balance:
            await self.deposit(account, balance, ts)

    async def deposit(self, account: str, amount: int, ts: int | None = None) -> Edge:
        answer = await self.write(
            "deposit",
            {"accountId": account, "amount": amount, "timestamp": ts},
            f"entry {{ {ENTRY} }}",
        )
        entry: Edge = answer["entry"]
        return entry

    async def transfer(self, source: str, target: str, amount: int) -> Edge:
        """The TRANSFER_OUT entry."""
        answer = await self.write(
            "transfer",
            {"sourceAccountId": source, "targetAccountId": target, "amount": amount},
            f"entry {{ {ENTRY} }}",
        )
        entry: Edge = answer["entry"]
        return entry

    async def pay(self, account: str, amount: int, ts: int | None = None) -> None:
        await self.write("pay", {"accountId": account, "amount": amount, "timestamp": ts})

    async def merge(self, survivor: str, absorbed: str) -> None:
        await self.write("mergeAccounts", {"accountId": survivor, "absorbedAccountId": absorbed})

    async def batch(self, items: list[tuple[str, str, int]]) -> None:
        """Transfers in one request, each of which must succeed."""
        transfers = [{"sourceAccountId": s, "targetAccountId": t, "amount": a} for s, t, a in items]
        answer = await self.write(
            "transferBatch", {"transfers": transfers}, "results { errors { code } }"
        )
        assert all(r["errors"] == [] for r in answer["results"]), answer

    async def transactions(self, account: str, after: str | None = None) -> list[Edge]:
        """Every edge of `account.transactions` after `after`, page by page."""
        edges: list[Edge] = []
        while True:
            variables = {"id": account, "first": 100, "after": after}
            page = (await self.post(PAGE, variables))["data"]["account"]["transactions"]
            edges.extend(page["edges"])
            if not page["pageInfo"]["hasNextPage"]:
                return edges
            after = page["pageInfo"]["endCursor"]


class Socket:
    """One connection: `events[id]` the edges each subscription received, `ends[id]` its
    `error` or `complete` message, `closed` the close code once the server closed."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: dict[str, list[Edge]] = {}
        self.ends: dict[str, dict[str, Any]] = {}
        self.closed: int | None = None
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: Server, key: str | None = None) -> "Socket":
        ws = await connect(ws_url(server), subprotocols=[PROTOCOL])  # type: ignore[list-item]
        await ws.send(init_frame(key))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30)) == {"type": "connection_ack"}
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                message = json.loads(frame)
                kind, op = message["type"], message.get("id")
                if kind == "next":
                    assert "errors" not in message["payload"], message
                    (edge,) = message["payload"]["data"].values()
                    self.events.setdefault(op, []).append(edge)
                elif kind in {"error", "complete"}:
                    self.ends[op] = message
                elif kind == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
        except ConnectionClosed:
            pass
        self.closed = self.ws.close_code

    async def subscribe(self, op: str, query: str, **variables: Any) -> None:
        self.events[op] = []
        await self.ws.send(subscribe(op, query, variables))

    async def wait_events(self, op: str, count: int, timeout_s: float = 30) -> list[Edge]:
        """The first `count` events of `op` (fails if it ends before)."""
        await until(lambda: len(self.events[op]) >= count or op in self.ends, op, timeout_s)
        assert len(self.events[op]) >= count, (op, self.ends.get(op), len(self.events[op]))
        return self.events[op][:count]

    async def error_codes(self, op: str, timeout_s: float = 30) -> list[str]:
        """The codes of the `error` that ended `op`."""
        await until(lambda: op in self.ends or self.closed is not None, f"end of {op}", timeout_s)
        end = self.ends.get(op)
        assert end is not None, (op, self.closed)
        assert end["type"] == "error", end
        return [error["extensions"]["code"] for error in end["payload"]]

    async def started(self, op: str, poke: Callable[[], Awaitable[object]]) -> Edge:
        """Write with `poke` until `op` receives an event: from then on it is live. That
        first event."""
        deadline = time.monotonic() + 30
        while not self.events[op]:
            assert op not in self.ends, self.ends[op]
            assert time.monotonic() < deadline, f"{op} never received an event"
            await poke()
            with contextlib.suppress(AssertionError):
                await until(lambda: bool(self.events[op]), op, timeout_s=0.5)
        return self.events[op][0]

    async def close(self) -> None:
        await self.ws.close()
        await self.reader


def init_frame(key: str | None) -> str:
    payload = None if key is None else {"Authorization": f"Bearer {key}"}
    return json.dumps({"type": "connection_init", "payload": payload})


def entry_ids(edges: list[Edge]) -> list[str]:
    return [edge["node"]["id"] for edge in edges]


def per_account(edges: list[Edge]) -> dict[str, list[str]]:
    """Entry ids by account, in the order given."""
    found: dict[str, list[str]] = {}
    for edge in edges:
        found.setdefault(edge["node"]["accountId"], []).append(edge["node"]["id"])
    return found
