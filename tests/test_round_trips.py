"""Every mutation is one round trip to PostgreSQL: one statement on the way to success or
refusal, whatever its clock, key or due cashback. Counted on the wire, by a proxy between
the server and PostgreSQL that reads the protocol's messages."""

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient

DAY_MS = 86_400_000
_SSL_REQUEST, _GSS_REQUEST = 80877103, 80877104


class RoundTripCounter:
    """A TCP proxy to PostgreSQL counting the client's round trips: each simple Query ('Q')
    and each Sync ('S') that ends an extended-protocol exchange."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.round_trips = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _count(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:  # untyped start-up messages, until the StartupMessage itself
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                writer.write(struct.pack("!I", length) + body)
                await writer.drain()
                if struct.unpack("!I", body[:4])[0] not in {_SSL_REQUEST, _GSS_REQUEST}:
                    break
            while True:
                head = await reader.readexactly(5)
                body = await reader.readexactly(struct.unpack("!I", head[1:])[0] - 4)
                if head[:1] in {b"Q", b"S"}:
                    self.round_trips += 1
                writer.write(head + body)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.host.startswith("/"):  # a socket folder, as the embedded PostgreSQL has
            socket_path = f"{self.host}/.s.PGSQL.{self.port}"
            up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
        else:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        for pump in (self._count(reader, up_writer), self._pump(up_reader, writer)):
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


@pytest.fixture
async def counter(database_url: str) -> AsyncIterator[tuple[RoundTripCounter, str]]:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    proxy = RoundTripCounter(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)))
    server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # No TLS, so the proxy can read the messages.
    url = psycopg.conninfo.make_conninfo(
        database_url, host="127.0.0.1", port=port, sslmode="disable", gssencmode="disable"
    )
    async with server:
        yield proxy, url


ACCOUNT = "account { id createdAt outgoing }"
MUTATIONS = {
    "create": "createAccount(input: {id: $id, timestamp: $ts, idempotencyKey: $key}) "
    f"{{ {ACCOUNT} errors {{ code }} }}",
    "deposit": "deposit(input: {accountId: $id, amount: $amount, timestamp: $ts, "
    "idempotencyKey: $key}) { balance entry { id kind } errors { code } }",
    "pay": "pay(input: {accountId: $id, amount: $amount, timestamp: $ts, "
    "idempotencyKey: $key}) { balance payment { id cashback } errors { code } }",
    "transfer": "transfer(input: {sourceAccountId: $id, targetAccountId: $other, "
    "amount: $amount, timestamp: $ts, idempotencyKey: $key}) "
    "{ balance entry { id } sourceAccount { id outgoing } errors { code } }",
    "batch": "transferBatch(input: {atomic: $atomic, transfers: ["
    "{sourceAccountId: $id, targetAccountId: $other, amount: $amount, timestamp: $ts, "
    "idempotencyKey: $key}, {sourceAccountId: $other, targetAccountId: $id, amount: 1}]}) "
    "{ results { balance errors { code } } }",
    "merge": "mergeAccounts(input: {accountId: $id, absorbedAccountId: $other, "
    "timestamp: $ts, idempotencyKey: $key}) { balance errors { code } }",
}
TYPES = {
    "id": "ID!",
    "other": "ID!",
    "amount": "Money!",
    "ts": "Timestamp",
    "key": "String",
    "atomic": "Boolean!",
}


async def _trips(
    gql: GraphQLClient, counter: RoundTripCounter, name: str, **variables: Any
) -> tuple[int, dict[str, Any]]:
    used = {v: t for v, t in TYPES.items() if f"${v}" in MUTATIONS[name]}
    declared = ", ".join(f"${v}: {t}" for v, t in used.items())
    document = f"mutation({declared}) {{ {MUTATIONS[name]} }}"
    defaults = {"other": "b", "amount": 10, "ts": None, "key": None, "atomic": False}
    values = {v: value for v, value in {**defaults, **variables}.items() if v in used}
    before = counter.round_trips
    body = await gql.post(document, values)
    assert "errors" not in body, body
    return counter.round_trips - before, body["data"]


async def _opened(make_client: MakeClient, url: str, clock: ClockMode) -> GraphQLClient:
    gql = await make_client(clock, database_url=url)
    for account in ("a", "b", "c"):
        await gql.ok(
            "mutation($id: ID!) { createAccount(input: {id: $id, timestamp: 1000}) "
            "{ errors { code } } deposit(input: {accountId: $id, amount: 1000000, "
            "timestamp: 1000}) { errors { code } } }",
            {"id": account},
        )
    return gql


@pytest.mark.parametrize("key", [None, "k"], ids=["unkeyed", "keyed"])
@pytest.mark.parametrize("name", list(MUTATIONS))
async def test_each_mutation_is_one_round_trip_on_the_client_clock(
    make_client: MakeClient,
    counter: tuple[RoundTripCounter, str],
    name: str,
    key: str | None,
) -> None:
    proxy, url = counter
    gql = await _opened(make_client, url, ClockMode.CLIENT)
    # A payment whose cashback falls due before the mutation: it is credited on the way.
    trips, _ = await _trips(gql, proxy, "pay", id="a", amount=5000, ts=2000)
    assert trips == 1
    later = 2000 + DAY_MS + 1
    first = "fresh" if name == "create" else "a"
    trips, data = await _trips(gql, proxy, name, id=first, ts=later, key=key)
    assert trips == 1, data
    assert all(not p.get("errors") for p in data.values()), data
    # A replay of the key, and a refusal, are one round trip too.
    trips, replay = await _trips(gql, proxy, name, id=first, ts=later, key=key)
    assert trips == 1
    if key is not None and name != "batch":  # a batch's second item has no key
        assert replay == data
    trips, refused = await _trips(gql, proxy, name, id="nobody", other="c", ts=later, key="k2")
    assert trips == 1, refused


@pytest.mark.parametrize("name", list(MUTATIONS))
async def test_each_mutation_is_one_round_trip_on_the_system_clock(
    make_client: MakeClient, counter: tuple[RoundTripCounter, str], name: str
) -> None:
    proxy, url = counter
    gql = await _opened(make_client, url, ClockMode.SYSTEM)
    first = "fresh" if name == "create" else "a"
    for key in (None, "k"):
        trips, data = await _trips(gql, proxy, name, id=first if key else first + "2", key=key)
        assert trips == 1, data


async def test_input_refused_before_the_database_costs_no_round_trip(
    make_client: MakeClient, counter: tuple[RoundTripCounter, str]
) -> None:
    proxy, url = counter
    gql = await _opened(make_client, url, ClockMode.CLIENT)
    trips, data = await _trips(gql, proxy, "deposit", id="a", amount=0)
    assert trips == 0
    assert data["deposit"]["errors"] == [{"code": "INVALID_AMOUNT"}]
    # Under a key the refusal is stored, so a later use of the key answers the same.
    trips, data = await _trips(gql, proxy, "deposit", id="a", amount=0, key="bad")
    assert trips == 1
    assert data["deposit"]["errors"] == [{"code": "INVALID_AMOUNT"}]


@pytest.mark.parametrize(("clock", "expected"), [(ClockMode.SYSTEM, 4), (ClockMode.CLIENT, 5)])
async def test_a_read_asks_the_database_for_now_only_on_the_client_clock(
    make_client: MakeClient,
    counter: tuple[RoundTripCounter, str],
    clock: ClockMode,
    expected: int,
) -> None:
    """A read: is cashback due (1), BEGIN its snapshot (1), the query (1), ROLLBACK (1); and,
    on the client clock only, reading that clock's now (1). The server's own clock costs
    no round trip."""
    proxy, url = counter
    gql = await _opened(make_client, url, clock)
    before = proxy.round_trips
    body = await gql.post('query { account(id: "a") { id } }')
    assert "errors" not in body, body
    assert proxy.round_trips - before == expected
