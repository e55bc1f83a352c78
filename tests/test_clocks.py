"""The two clocks: which timestamp a mutation gets, which it may ask for, and what `at` reads
default to. Client clock: now is the greatest timestamp a successful mutation used. System
clock: now is the server's wall clock (faked with monkeypatch where a test needs exact ms)."""

import time
from typing import Any

import psycopg
import pytest

import bank_graphql.ledger.storage.clock as clock_module
from bank_graphql.ledger import ClockMode, SweepLimits
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import client_now, entry_count, wait_until_cashback
from tests.operations import (
    CREATE,
    DAY_MS,
    DEPOSIT,
    PAY,
    TRANSFER,
    balance,
    create,
    deposit,
    funded,
    pay,
    status,
    transfer,
)

Conn = psycopg.AsyncConnection[Any]
MAX_TIMESTAMP = 2**53 - 1
TIMESTAMP_FIELD = ["input", "timestamp"]

PAY_QUIET = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts}) {
    balance
    payment { id timestamp cashback cashbackDueAt }
    errors { code message field }
  }
}"""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def refusals(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def mutate(gql: GraphQLClient, document: str, variables: dict[str, Any]) -> dict[str, Any]:
    """Run a one-field mutation and return its payload."""
    data = await gql.ok(document, variables)
    (payload,) = data.values()
    result: dict[str, Any] = payload
    return result


# -- client clock ---------------------------------------------------------------------------


async def test_client_clock_starts_at_zero_and_follows_successful_mutations(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    first = await create(gql, "a")
    assert first["errors"] == []
    assert first["account"]["createdAt"] == 0
    assert await balance(gql, "a") == 0

    made = await deposit(gql, "a", 100, 5_000)
    assert made["errors"] == []
    assert made["entry"]["timestamp"] == 5_000
    assert await client_now(db) == 5_000

    # Without a timestamp: T = now.
    second = await create(gql, "b")
    assert second["errors"] == []
    assert second["account"]["createdAt"] == 5_000
    untimed = await deposit(gql, "b", 10)
    assert untimed["errors"] == []
    assert untimed["entry"]["timestamp"] == 5_000

    # An earlier timestamp on an account with no later entry is fine and leaves now alone.
    earlier = await create(gql, "c", 3_000)
    assert earlier["errors"] == []
    assert earlier["account"]["createdAt"] == 3_000
    assert (await create(gql, "d"))["account"]["createdAt"] == 5_000

    # The client clock never refuses a timestamp for being in the future.
    future = 10**12
    ahead = await deposit(gql, "c", 1, future)
    assert ahead["errors"] == []
    assert ahead["entry"]["timestamp"] == future
    assert (await create(gql, "e"))["account"]["createdAt"] == future
    assert await client_now(db) == future
    await audit()


async def test_client_clock_failed_mutations_do_not_move_now(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    await funded(gql, "a", 100, ts=5_000)
    await funded(gql, "b", 0, ts=5_000)
    entries = await entry_count(db)
    later = 9_000

    attempts = [
        (DEPOSIT, {"id": "ghost", "amount": 1, "ts": later}, "ACCOUNT_NOT_FOUND"),
        (PAY, {"id": "a", "amount": 1_000, "ts": later}, "INSUFFICIENT_FUNDS"),
        (TRANSFER, {"from": "a", "to": "b", "amount": 1_000, "ts": later}, "INSUFFICIENT_FUNDS"),
        (TRANSFER, {"from": "a", "to": "ghost", "amount": 1, "ts": later}, "ACCOUNT_NOT_FOUND"),
        (TRANSFER, {"from": "a", "to": "a", "amount": 1, "ts": later}, "SAME_ACCOUNT"),
        (CREATE, {"id": "a", "ts": later}, "ACCOUNT_ALREADY_EXISTS"),
        (CREATE, {"id": "-bad", "ts": later}, "INVALID_ACCOUNT_ID"),
        (DEPOSIT, {"id": "a", "amount": 0, "ts": later}, "INVALID_AMOUNT"),
    ]
    for document, variables, code in attempts:
        payload = await mutate(gql, document, variables)
        assert [e["code"] for e in payload["errors"]] == [code], (variables, payload)
        assert await client_now(db) == 5_000, variables

    assert await entry_count(db) == entries
    made = await create(gql, "z")
    assert made["errors"] == []
    assert made["account"]["createdAt"] == 5_000
    untimed = await deposit(gql, "a", 1)
    assert untimed["errors"] == []
    assert untimed["entry"]["timestamp"] == 5_000
    await audit()


async def test_client_clock_timestamp_order_per_touched_account(gql: GraphQLClient, audit) -> None:
    await funded(gql, "a", 0, ts=1_000)
    assert (await deposit(gql, "a", 100, 2_000))["errors"] == []

    early = await mutate(gql, DEPOSIT, {"id": "a", "amount": 1, "ts": 1_999})
    assert refusals(early) == [("TIMESTAMP_OUT_OF_ORDER", TIMESTAMP_FIELD)]
    assert early["balance"] is None
    assert early["entry"] is None
    same = await deposit(gql, "a", 1, 2_000)
    assert same["errors"] == []
    assert same["balance"] == 101

    # Earlier than now but not than any entry of the touched account: accepted.
    await funded(gql, "b", 50, ts=500)
    assert (await deposit(gql, "b", 5, 600))["errors"] == []

    # A transfer is ordered against both accounts: b's entries are older, a's are not.
    crossing = await mutate(gql, TRANSFER, {"from": "b", "to": "a", "amount": 5, "ts": 1_500})
    assert refusals(crossing) == [("TIMESTAMP_OUT_OF_ORDER", TIMESTAMP_FIELD)]
    assert await balance(gql, "b") == 55
    assert await balance(gql, "a") == 101
    assert (await transfer(gql, "b", "a", 5, 2_000))["errors"] == []

    # Nothing may predate an account's creation, even with no entries yet.
    await funded(gql, "c", 0, ts=3_000)
    before_creation = await mutate(gql, DEPOSIT, {"id": "c", "amount": 1, "ts": 2_999})
    assert refusals(before_creation) == [("TIMESTAMP_OUT_OF_ORDER", TIMESTAMP_FIELD)]
    assert (await deposit(gql, "c", 1, 3_000))["errors"] == []
    await audit()


async def test_client_clock_reads_default_to_now(gql: GraphQLClient, audit) -> None:
    await funded(gql, "alice", 1_000, ts=1_000)
    paid = await pay(gql, "alice", 1_000, 2_000)
    assert paid["errors"] == []
    assert paid["payment"]["status"] == "IN_PROGRESS"
    due = paid["payment"]["cashbackDueAt"]
    assert due == 2_000 + DAY_MS

    assert await status(gql, "alice", "payment1") == "IN_PROGRESS"
    assert await balance(gql, "alice") == 0

    await funded(gql, "clock", 0, ts=due)
    assert await status(gql, "alice", "payment1") == "CASHBACK_RECEIVED"
    assert await balance(gql, "alice") == 20
    assert await balance(gql, "alice", due) == 20
    assert await balance(gql, "alice", due - 1) == 0
    await audit()


async def test_client_clock_pay_whose_cashback_would_fall_due_past_max_timestamp(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    last_ok = MAX_TIMESTAMP - DAY_MS
    await funded(gql, "alice", 1_000, ts=last_ok - 10)

    for ts in (last_ok + 1, MAX_TIMESTAMP):
        refused = await mutate(gql, PAY_QUIET, {"id": "alice", "amount": 100, "ts": ts})
        assert refusals(refused) == [("INVALID_TIMESTAMP", TIMESTAMP_FIELD)], ts
        assert refused["payment"] is None
    assert await client_now(db) == last_ok - 10
    assert await balance(gql, "alice") == 1_000

    ok = await mutate(gql, PAY_QUIET, {"id": "alice", "amount": 100, "ts": last_ok})
    assert ok["errors"] == []
    assert ok["payment"] == {
        "id": "payment1",
        "timestamp": last_ok,
        "cashback": 2,
        "cashbackDueAt": MAX_TIMESTAMP,
    }
    assert await status(gql, "alice", "payment1", MAX_TIMESTAMP - 1) == "IN_PROGRESS"
    assert await status(gql, "alice", "payment1", MAX_TIMESTAMP) == "CASHBACK_RECEIVED"
    assert await balance(gql, "alice", MAX_TIMESTAMP) == 902

    # Without a timestamp the pay gets T = now: refused once now is past the last valid instant.
    await funded(gql, "clock", 0, ts=last_ok + 1)
    untimed = await mutate(gql, PAY_QUIET, {"id": "alice", "amount": 100, "ts": None})
    assert refusals(untimed) == [("INVALID_TIMESTAMP", TIMESTAMP_FIELD)]
    assert await balance(gql, "alice") == 900
    again = await mutate(gql, PAY_QUIET, {"id": "alice", "amount": 100, "ts": last_ok})
    assert again["errors"] == []
    assert again["payment"]["id"] == "payment2"
    await audit()


# -- system clock ---------------------------------------------------------------------------


async def test_system_clock_stamps_mutations_with_server_now(
    make_client: MakeClient, db: Conn, audit
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    start = wall_ms()
    made = await create(gql, "alice")
    assert made["errors"] == []
    created = made["account"]["createdAt"]
    assert start <= created <= wall_ms()

    put = await deposit(gql, "alice", 1_000)
    assert put["errors"] == []
    assert created <= put["entry"]["timestamp"] <= wall_ms()

    paid = await pay(gql, "alice", 500)
    assert paid["errors"] == []
    ts = paid["payment"]["timestamp"]
    assert put["entry"]["timestamp"] <= ts <= wall_ms()
    assert paid["payment"]["cashbackDueAt"] == ts + DAY_MS
    assert paid["payment"]["status"] == "IN_PROGRESS"

    # Reads default to now; a later `at` projects the cashback without writing it.
    assert await balance(gql, "alice") == 500
    assert await balance(gql, "alice", ts + DAY_MS - 1) == 500
    assert await balance(gql, "alice", ts + DAY_MS) == 510
    assert await status(gql, "alice", "payment1", ts + DAY_MS) == "CASHBACK_RECEIVED"
    assert await status(gql, "alice", "payment1") == "IN_PROGRESS"
    cursor = await db.execute("SELECT count(*) FROM entries WHERE kind = 'CASHBACK'")
    assert (await cursor.fetchone()) == (0,)
    await audit()


async def test_system_clock_refuses_timestamps_later_than_now(
    make_client: MakeClient, db: Conn, audit
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    past = wall_ms() - 60_000
    await funded(gql, "alice", 1_000, ts=past)
    await funded(gql, "bob", 0, ts=past)
    entries = await entry_count(db)
    future = wall_ms() + 60_000

    attempts = [
        (CREATE, {"id": "carol", "ts": future}),
        (DEPOSIT, {"id": "alice", "amount": 1, "ts": future}),
        (TRANSFER, {"from": "alice", "to": "bob", "amount": 1, "ts": future}),
        (PAY, {"id": "alice", "amount": 100, "ts": future}),
    ]
    for document, variables in attempts:
        payload = await mutate(gql, document, variables)
        assert refusals(payload) == [("INVALID_TIMESTAMP", TIMESTAMP_FIELD)], variables

    assert await entry_count(db) == entries
    assert (await gql.ok('{ account(id: "carol") { id } }'))["account"] is None
    assert await balance(gql, "alice") == 1_000
    assert await balance(gql, "bob") == 0
    await audit()


async def test_system_clock_timestamp_order(make_client: MakeClient, audit) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    base = wall_ms() - 600_000
    await funded(gql, "a", 0, ts=base)
    assert (await deposit(gql, "a", 100, base + 1_000))["errors"] == []

    early = await mutate(gql, DEPOSIT, {"id": "a", "amount": 1, "ts": base + 999})
    assert refusals(early) == [("TIMESTAMP_OUT_OF_ORDER", TIMESTAMP_FIELD)]
    same = await deposit(gql, "a", 1, base + 1_000)
    assert same["errors"] == []
    assert same["entry"]["timestamp"] == base + 1_000

    # A past creation time is fine; nothing may predate it.
    await funded(gql, "b", 50, ts=base - 5_000)
    before_creation = await mutate(gql, DEPOSIT, {"id": "b", "amount": 1, "ts": base - 5_001})
    assert refusals(before_creation) == [("TIMESTAMP_OUT_OF_ORDER", TIMESTAMP_FIELD)]

    # A transfer is ordered against the newest entry of both accounts.
    crossing = await mutate(gql, TRANSFER, {"from": "b", "to": "a", "amount": 5, "ts": base + 500})
    assert refusals(crossing) == [("TIMESTAMP_OUT_OF_ORDER", TIMESTAMP_FIELD)]
    assert await balance(gql, "b") == 50
    moved = await transfer(gql, "b", "a", 5, base + 1_000)
    assert moved["errors"] == []
    assert moved["balance"] == 45
    await audit()


async def test_system_clock_default_timestamp_never_precedes_the_newest_entry(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, audit
) -> None:
    """The server's clock steps back (an NTP correction): untimed mutations of an account
    keep its order, T = max(now, newest entry); given timestamps are still judged by now."""
    fake = {"now": 10_000_000}
    monkeypatch.setattr(clock_module, "wall_clock_ms", lambda: fake["now"])
    gql = await make_client(ClockMode.SYSTEM)

    made = await create(gql, "a")
    assert made["errors"] == []
    assert made["account"]["createdAt"] == 10_000_000
    first = await deposit(gql, "a", 100)
    assert first["errors"] == []
    assert first["entry"]["timestamp"] == 10_000_000

    fake["now"] = 9_000_000
    behind = await deposit(gql, "a", 1)
    assert behind["errors"] == []
    assert behind["entry"]["timestamp"] == 10_000_000
    ahead = await mutate(gql, DEPOSIT, {"id": "a", "amount": 1, "ts": 9_000_001})
    assert refusals(ahead) == [("INVALID_TIMESTAMP", TIMESTAMP_FIELD)]
    at_now = await mutate(gql, DEPOSIT, {"id": "a", "amount": 1, "ts": 9_000_000})
    assert refusals(at_now) == [("TIMESTAMP_OUT_OF_ORDER", TIMESTAMP_FIELD)]

    # An account with nothing newer than now: T = now, and a timestamp equal to now is fine.
    other = await create(gql, "b")
    assert other["errors"] == []
    assert other["account"]["createdAt"] == 9_000_000
    exact = await deposit(gql, "b", 1, 9_000_000)
    assert exact["errors"] == []
    assert exact["entry"]["timestamp"] == 9_000_000
    refused = await mutate(gql, CREATE, {"id": "c", "ts": 9_000_001})
    assert refusals(refused) == [("INVALID_TIMESTAMP", TIMESTAMP_FIELD)]

    # A transfer without timestamp takes the newest of both accounts.
    moved = await transfer(gql, "b", "a", 1)
    assert moved["errors"] == []
    assert moved["entry"]["timestamp"] == 10_000_000
    await audit()


async def test_system_clock_mutation_settles_past_due_cashback_before_ordering(
    make_client: MakeClient, db: Conn, audit
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    now = wall_ms()
    paid_at = now - 2 * DAY_MS
    due = paid_at + DAY_MS
    await funded(gql, "alice", 1_000, ts=now - 3 * DAY_MS)
    paid = await mutate(gql, PAY_QUIET, {"id": "alice", "amount": 1_000, "ts": paid_at})
    assert paid["errors"] == []
    assert paid["payment"]["cashbackDueAt"] == due
    cursor = await db.execute("SELECT count(*) FROM entries WHERE kind = 'CASHBACK'")
    assert (await cursor.fetchone()) == (0,)

    # Between the payment and its (past) due time: too late, the cashback is written first.
    between = await mutate(gql, DEPOSIT, {"id": "alice", "amount": 1, "ts": paid_at + DAY_MS // 2})
    assert refusals(between) == [("TIMESTAMP_OUT_OF_ORDER", TIMESTAMP_FIELD)]
    cursor = await db.execute(
        "SELECT ts, amount, balance_after FROM entries WHERE kind = 'CASHBACK'"
    )
    assert await cursor.fetchall() == [(due, 20, 20)]

    at_due = await deposit(gql, "alice", 1, due)
    assert at_due["errors"] == []
    assert at_due["balance"] == 21
    untimed = await deposit(gql, "alice", 1)
    assert untimed["errors"] == []
    assert untimed["entry"]["timestamp"] >= now
    assert await status(gql, "alice", "payment1") == "CASHBACK_RECEIVED"
    assert await balance(gql, "alice", due - 1) == 0
    await audit()


async def test_system_clock_sweeper_settles_past_due_cashback(
    make_client: MakeClient, db: Conn, audit
) -> None:
    gql = await make_client(
        ClockMode.SYSTEM, sweeper_enabled=True, sweeper=SweepLimits(interval_s=0.05)
    )
    now = wall_ms()
    await funded(gql, "alice", 1_000, ts=now - 3 * DAY_MS)
    paid = await mutate(gql, PAY_QUIET, {"id": "alice", "amount": 500, "ts": now - 2 * DAY_MS})
    assert paid["errors"] == []
    due = paid["payment"]["cashbackDueAt"]

    rows = await wait_until_cashback(db, 1, timeout_s=5.0)
    assert [row[:4] for row in rows] == [("alice", due, 10, 510)]
    await audit()
