"""Property test of the clocks and cashback, through the GraphQL API.

Hypothesis generates sequences of creates, deposits, pays, transfers, batches (atomic or not)
and merges, with timestamps absent, backdated or days ahead, on both clocks. The system
clock is faked so each run is exact: it moves forward by up to days, and sometimes steps back
(another server's clock, an NTP correction); its timestamps can only be backdated. After
every step: every read answers, the books balance, and no account has an unpaid cashback
that was due at or before one of its entries.

One server runs every example; the tables are emptied between examples (the append-only
trigger set aside for that), so each example starts from an empty ledger and shrinks alone.
"""

import asyncio
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bank_graphql.ledger.storage.clock as clock_module
from bank_graphql.edge.app import create_app
from bank_graphql.edge.settings import Settings
from bank_graphql.ledger import ClockMode, audit_books
from tests.conftest import admin_headers
from tests.db_helpers import cashback_left_behind
from tests.operations import BATCH, CREATE, DAY_MS, DEPOSIT, MAX_MONEY, MERGE

T = TypeVar("T")
Op = tuple[Any, ...]

FUNDED = 3
"""Accounts opened and funded before each example's steps; two more may be created by them."""
SLOTS = FUNDED + 2
SYSTEM_START_MS = 1_700_000_000_000

# feed_state first: a live feed sequencing meanwhile locks its row before the feed, so this
# waits for it instead of deadlocking with it.
RESET = """
LOCK TABLE feed_state IN ACCESS EXCLUSIVE MODE;
ALTER TABLE entries DISABLE TRIGGER entries_no_truncate;
ALTER TABLE feed DISABLE TRIGGER feed_no_truncate;
ALTER TABLE chain_anchors DISABLE TRIGGER chain_anchors_no_truncate;
TRUNCATE feed, chain_anchors, entries, payments, accounts, idempotency_keys RESTART IDENTITY;
ALTER TABLE entries ENABLE TRIGGER entries_no_truncate;
ALTER TABLE feed ENABLE TRIGGER feed_no_truncate;
ALTER TABLE chain_anchors ENABLE TRIGGER chain_anchors_no_truncate;
UPDATE feed_state SET last_position = 0;
ALTER SEQUENCE payment_numbers RESTART;
UPDATE client_clock SET now_ms = 0;
"""

PAY = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts}) {
    balance payment { id cashbackDueAt } account { outgoing } errors { code }
  }
}"""

TRANSFER = """
mutation($input: TransferInput!) {
  transfer(input: $input) {
    balance entry { id timestamp } sourceAccount { outgoing } targetAccount { outgoing }
    errors { code }
  }
}"""

READ = (
    "query(" + ", ".join(f"$a{i}: ID!" for i in range(SLOTS)) + ") {\n"
    "  accounts(first: 100) { nodes { id balance outgoing } }\n"
    "  topSpenders(first: 50) { accountId outgoing }\n"
    + "".join(f"  a{i}: account(id: $a{i}) {{ ...Everything }}\n" for i in range(SLOTS))
    + """}
fragment Everything on Account {
  balance outgoing far: balance(at: 9007199254740991)
  transactions(first: 100) { nodes { timestamp kind amount balanceAfter paymentId } }
  payments(first: 100) { nodes { id cashbackDueAt status } }
}"""
)

# Shifts of a timestamp from now: the client clock takes them as they are (days ahead make
# cashback fall due), the system clock only backdates (by their size).
SHIFTS = (-2 * DAY_MS - 7, -DAY_MS - 1, -DAY_MS, -DAY_MS + 1, -1, 0, 1, DAY_MS - 1, DAY_MS)
SHIFTS += (DAY_MS + 1, 2 * DAY_MS + 7)
# Moves of the faked system clock; the negative ones are another server's clock behind.
TICKS = (1, 50, 1_000, DAY_MS // 2, DAY_MS, DAY_MS + 3, -1, -50, -1_000)

slot = st.integers(0, FUNDED - 1)
when = st.none() | st.sampled_from(SHIFTS)
amount = st.sampled_from((1, 50, 1_000, 5_000))
key = st.none() | st.sampled_from(("k1", "k2"))
ITEM = (slot, slot, amount, when, key)
items = st.lists(st.tuples(*ITEM), min_size=2, max_size=4)
batches = st.tuples(st.just("batch"), items, st.booleans())
operations = st.one_of(
    st.tuples(st.just("create"), st.integers(FUNDED, SLOTS - 1), when),
    st.tuples(st.just("deposit"), slot, st.sampled_from((1, 10_000, MAX_MONEY)), when),
    st.tuples(st.just("pay"), slot, amount, when),
    st.tuples(st.just("transfer"), *ITEM),
    batches,
    batches,
    st.tuples(st.just("merge"), slot, slot, when),
)
system_operations = operations | st.tuples(st.just("tick"), st.sampled_from(TICKS))


class Ledger:
    """The app with its lifespan, an httpx client and a database connection, driven from a
    loop of its own so Hypothesis can run many examples against one server."""

    def __init__(self, database_url: str, clock: ClockMode) -> None:
        self.clock = clock
        self.fake_now = SYSTEM_START_MS
        self.runner = asyncio.Runner()
        app = create_app(Settings(database_url=database_url, clock=clock, sweeper_enabled=False))
        self.lifespan = app.router.lifespan_context(app)
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            timeout=30,
            headers=self.runner.run(admin_headers(database_url)),
        )
        self.run(self.lifespan.__aenter__())
        self.db = self.run(psycopg.AsyncConnection.connect(database_url, autocommit=True))

    def run(self, awaitable: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await awaitable

        return self.runner.run(wrap())

    def close(self) -> None:
        try:
            self.run(self.db.close())
            self.run(self.http.aclose())
            self.run(self.lifespan.__aexit__(None, None, None))
        finally:
            self.runner.close()

    def ok(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Post; there must be no GraphQL error (refusals in payloads are fine)."""
        json = {"query": document, "variables": variables}
        response = self.run(self.http.post("/graphql", json=json))
        body: dict[str, Any] = response.json()
        assert "errors" not in body, (variables, body)
        data: dict[str, Any] = body["data"]
        return data

    def now(self) -> int:
        if self.clock is ClockMode.SYSTEM:
            return self.fake_now
        cursor = self.run(self.db.execute("SELECT now_ms FROM client_clock"))
        row = self.run(cursor.fetchone())
        assert row is not None
        return int(row[0])

    def at(self, shift: int | None) -> int | None:
        if shift is None:
            return None
        if self.clock is ClockMode.SYSTEM:
            return max(0, self.fake_now - abs(shift))
        return max(0, self.now() + shift)

    @staticmethod
    def id(slot: int) -> str:
        return f"acc{slot}"

    def begin_example(self) -> None:
        """Empty the ledger; open and fund the accounts (three days back on the system clock,
        so steps can backdate), each paying once: its cashback falls due within a second.
        On the system clock the first account's newest entry is stamped by a clock one second
        ahead of this one (another server's, or this one's before an NTP correction)."""

        async def reset() -> None:
            async with self.db.transaction():
                await self.db.execute(RESET)

        self.run(reset())
        self.fake_now = SYSTEM_START_MS
        opened = max(0, self.now() - 3 * DAY_MS - 10)
        for i in range(FUNDED):
            self.mutate(CREATE, {"id": self.id(i), "ts": opened})
            self.mutate(DEPOSIT, {"id": self.id(i), "amount": 10_000, "ts": opened})
        payers = range(FUNDED)
        if self.clock is ClockMode.SYSTEM:
            self.mutate(DEPOSIT, {"id": self.id(0), "amount": 1, "ts": None})
            self.fake_now -= 1_000
            payers = range(1, FUNDED)
        for i in payers:
            paid_at = max(opened, self.now() - DAY_MS + 1 + 400 * i)
            self.mutate(PAY, {"id": self.id(i), "amount": 1_000, "ts": paid_at})
        if self.clock is ClockMode.CLIENT:  # now moves to a millisecond before they fall due
            self.mutate(CREATE, {"id": "clock", "ts": DAY_MS - 1})

    def mutate(self, document: str, variables: dict[str, Any]) -> None:
        self.ok(document, variables)

    def step(self, op: Op) -> None:
        kind, *args = op
        if kind == "tick":
            self.fake_now += args[0]
        elif kind == "create":
            self.mutate(CREATE, {"id": self.id(args[0]), "ts": self.at(args[1])})
        elif kind in ("deposit", "pay"):
            variables = {"id": self.id(args[0]), "amount": args[1], "ts": self.at(args[2])}
            self.mutate(DEPOSIT if kind == "deposit" else PAY, variables)
        elif kind == "transfer":
            self.mutate(TRANSFER, {"input": self.transfer_input(*args)})
        elif kind == "batch":
            items = [self.transfer_input(*a) for a in args[0]]
            self.mutate(BATCH, {"transfers": items, "atomic": args[1]})
        else:
            variables = {"a": self.id(args[0]), "b": self.id(args[1]), "ts": self.at(args[2])}
            self.mutate(MERGE, variables)

    def transfer_input(
        self, source: int, target: int, amount: int, shift: int | None, key: str | None
    ) -> dict[str, Any]:
        return {
            "sourceAccountId": self.id(source),
            "targetAccountId": self.id(target),
            "amount": amount,
            "timestamp": self.at(shift),
            "idempotencyKey": key,
        }

    def check(self) -> None:
        """Every read answers; the books balance; no cashback was overtaken by an entry."""
        data = self.ok(READ, {f"a{i}": self.id(i) for i in range(SLOTS)})
        assert data["accounts"]["nodes"]
        assert self.run(audit_books(self.db)) == []
        assert self.run(cashback_left_behind(self.db)) == []


@pytest.fixture(params=[ClockMode.CLIENT, ClockMode.SYSTEM], ids=["client", "system"])
def ledger(
    request: pytest.FixtureRequest, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ledger]:
    ledger = Ledger(database_url, request.param)
    monkeypatch.setattr(clock_module, "wall_clock_ms", lambda: ledger.fake_now)
    try:
        yield ledger
    finally:
        ledger.close()


PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(data=st.data())
def test_every_step_keeps_reads_books_and_cashback_order(ledger: Ledger, data: Any) -> None:
    strategy = system_operations if ledger.clock is ClockMode.SYSTEM else operations
    steps = data.draw(st.lists(strategy, min_size=1, max_size=12), label="steps")
    ledger.begin_example()
    ledger.check()
    for op in steps:
        ledger.step(op)
        ledger.check()
