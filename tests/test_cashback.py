"""Cashback: credited at exactly its due time, ordered before anything else at that instant,
settled by mutations, by query requests and by the sweeper, and only projected (never written)
for instants later than now. Also payments: listing, lookups and status(at)."""

import asyncio
from typing import Any

import psycopg

from bank_graphql.ledger import ClockMode, SweepLimits
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import cashback_rows, entry_count, wait_until_cashback
from tests.operations import (
    DAY_MS,
    DEPOSIT,
    HISTORY,
    PAYMENT,
    balance,
    create,
    deposit,
    funded,
    pay,
    status,
    transfer,
)

Conn = psycopg.AsyncConnection[Any]

# A pay whose payload reads nothing: `Payment.status` without `at` would open a read snapshot,
# and a read request settles everything due by now, which some tests must avoid.
PAY_QUIET = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts}) {
    balance
    payment { id accountId timestamp amount cashback cashbackDueAt }
    errors { code message field }
  }
}"""

PAYMENTS = """
query($id: ID!, $first: Int, $after: String) {
  account(id: $id) {
    payments(first: $first, after: $after) {
      edges { cursor node { id accountId timestamp amount cashback cashbackDueAt } }
      nodes { id }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}"""


async def pay_quiet(
    gql: GraphQLClient, account_id: str, amount: int, ts: int | None = None
) -> dict[str, Any]:
    data = await gql.ok(PAY_QUIET, {"id": account_id, "amount": amount, "ts": ts})
    payload: dict[str, Any] = data["pay"]
    return payload


async def history(gql: GraphQLClient, account_id: str) -> list[tuple[Any, ...]]:
    """(timestamp, kind, amount, balanceAfter, paymentId) of every entry, oldest first."""
    data = await gql.ok(HISTORY, {"id": account_id, "first": 100})
    connection = data["account"]["transactions"]
    assert connection["pageInfo"]["hasNextPage"] is False
    return [
        (n["timestamp"], n["kind"], n["amount"], n["balanceAfter"], n["paymentId"])
        for n in (edge["node"] for edge in connection["edges"])
    ]


async def test_cashback_is_credited_at_exactly_the_due_timestamp(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    await funded(gql, "alice", 10_000, ts=1_000)
    paid = await pay(gql, "alice", 1_000, 2_000)
    assert paid["errors"] == []
    due = 2_000 + DAY_MS
    assert paid["balance"] == 9_000
    assert paid["payment"] == {
        "id": "payment1",
        "accountId": "alice",
        "timestamp": 2_000,
        "amount": 1_000,
        "cashback": 20,
        "cashbackDueAt": due,
        "status": "IN_PROGRESS",
    }

    # Now is one millisecond before the due time: nothing is credited yet.
    await funded(gql, "clock", 0, ts=due - 1)
    assert await status(gql, "alice", "payment1") == "IN_PROGRESS"
    assert await balance(gql, "alice") == 9_000
    assert await cashback_rows(db) == []

    # Now reaches the due time exactly (through another account): the cashback is written.
    assert (await deposit(gql, "clock", 1, due))["errors"] == []
    assert await status(gql, "alice", "payment1") == "CASHBACK_RECEIVED"
    assert await balance(gql, "alice") == 9_020
    assert await cashback_rows(db) == [("alice", due, 20, 9_020, 1)]
    assert await history(gql, "alice") == [
        (1_000, "DEPOSIT", 10_000, 10_000, None),
        (2_000, "PAYMENT", 1_000, 9_000, "payment1"),
        (due, "CASHBACK", 20, 9_020, "payment1"),
    ]

    # As of past instants: the boundary is exactly the due time.
    assert await status(gql, "alice", "payment1", due - 1) == "IN_PROGRESS"
    assert await status(gql, "alice", "payment1", due) == "CASHBACK_RECEIVED"
    assert await balance(gql, "alice", due - 1) == 9_000
    assert await balance(gql, "alice", due) == 9_020
    await audit()


async def test_entries_at_the_due_timestamp_come_after_the_cashback(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    await funded(gql, "alice", 10_000, ts=1_000)
    await funded(gql, "bob", 1_000, ts=1_000)
    assert (await pay_quiet(gql, "alice", 1_000, 2_000))["errors"] == []
    due = 2_000 + DAY_MS

    # One millisecond before the due time an entry still goes before the cashback.
    early = await deposit(gql, "alice", 5, due - 1)
    assert early["errors"] == []
    assert early["balance"] == 9_005

    # At the due time itself the cashback (20) is written first, then the deposit.
    at_due = await deposit(gql, "alice", 7, due)
    assert at_due["errors"] == []
    assert at_due["balance"] == 9_032
    assert at_due["entry"]["timestamp"] == due
    assert at_due["entry"]["balanceAfter"] == 9_032

    moved = await transfer(gql, "bob", "alice", 100, due)
    assert moved["errors"] == []
    spent = await pay_quiet(gql, "alice", 32, due)
    assert spent["errors"] == []
    assert spent["balance"] == 9_100

    assert await history(gql, "alice") == [
        (1_000, "DEPOSIT", 10_000, 10_000, None),
        (2_000, "PAYMENT", 1_000, 9_000, "payment1"),
        (due - 1, "DEPOSIT", 5, 9_005, None),
        (due, "CASHBACK", 20, 9_025, "payment1"),
        (due, "DEPOSIT", 7, 9_032, None),
        (due, "TRANSFER_IN", 100, 9_132, None),
        (due, "PAYMENT", 32, 9_100, "payment2"),
    ]
    # Exactly one cashback entry, and its id is below the deposit's at the same instant.
    cursor = await db.execute(
        "SELECT kind::text FROM entries WHERE account_id = 'alice' AND ts = %s ORDER BY id",
        (due,),
    )
    assert [row[0] for row in await cursor.fetchall()] == [
        "CASHBACK",
        "DEPOSIT",
        "TRANSFER_IN",
        "PAYMENT",
    ]
    assert await balance(gql, "alice", due - 1) == 9_005
    assert await balance(gql, "alice", due) == 9_100
    await audit()


async def test_zero_cashback_writes_no_entry_but_status_still_turns(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    await funded(gql, "alice", 1_000, ts=1_000)
    small = await pay_quiet(gql, "alice", 49, 2_000)
    assert small["errors"] == []
    assert small["payment"]["cashback"] == 0
    smallest_paying = await pay_quiet(gql, "alice", 50, 2_000)
    assert smallest_paying["errors"] == []
    assert smallest_paying["payment"]["cashback"] == 1
    rounded_down = await pay_quiet(gql, "alice", 149, 2_000)
    assert rounded_down["errors"] == []
    assert rounded_down["payment"]["cashback"] == 2
    due = 2_000 + DAY_MS
    assert small["payment"]["cashbackDueAt"] == due

    assert await status(gql, "alice", "payment1", due - 1) == "IN_PROGRESS"
    assert await status(gql, "alice", "payment1", due) == "CASHBACK_RECEIVED"

    await funded(gql, "clock", 0, ts=due)
    assert await status(gql, "alice", "payment1") == "CASHBACK_RECEIVED"
    assert await status(gql, "alice", "payment2") == "CASHBACK_RECEIVED"
    assert await balance(gql, "alice") == 1_000 - 49 - 50 - 149 + 1 + 2
    assert await cashback_rows(db) == [
        ("alice", due, 1, 753, 2),
        ("alice", due, 2, 755, 3),
    ]
    assert [e[1] for e in await history(gql, "alice")] == [
        "DEPOSIT",
        "PAYMENT",
        "PAYMENT",
        "PAYMENT",
        "CASHBACK",
        "CASHBACK",
    ]
    await audit()


async def test_a_future_projection_writes_nothing(gql: GraphQLClient, db: Conn, audit) -> None:
    await funded(gql, "alice", 10_000, ts=1_000)
    assert (await pay_quiet(gql, "alice", 1_000, 2_000))["errors"] == []
    assert (await pay_quiet(gql, "alice", 500, 3_000))["errors"] == []
    due1, due2 = 2_000 + DAY_MS, 3_000 + DAY_MS
    before = await entry_count(db)

    data = await gql.ok(
        """
        query($d1: Timestamp!, $d2: Timestamp!, $before1: Timestamp!, $later: Timestamp!) {
          account(id: "alice") {
            now: balance
            b1: balance(at: $before1) d1: balance(at: $d1) d2: balance(at: $d2)
            later: balance(at: $later)
          }
          p1: payment(accountId: "alice", id: "payment1") {
            now: status before: status(at: $before1) due: status(at: $d1)
          }
          p2: payment(accountId: "alice", id: "payment2") {
            at1: status(at: $d1) at2: status(at: $d2)
          }
        }""",
        {"d1": due1, "d2": due2, "before1": due1 - 1, "later": due2 + 30 * DAY_MS},
    )
    assert data["account"] == {"now": 8_500, "b1": 8_500, "d1": 8_520, "d2": 8_530, "later": 8_530}
    assert data["p1"] == {"now": "IN_PROGRESS", "before": "IN_PROGRESS", "due": "CASHBACK_RECEIVED"}
    assert data["p2"] == {"at1": "IN_PROGRESS", "at2": "CASHBACK_RECEIVED"}

    # Nothing was written: no entry, no settled payment, the stored balance and now unchanged.
    assert await entry_count(db) == before
    assert await cashback_rows(db) == []
    cursor = await db.execute("SELECT bool_or(settled) FROM payments")
    assert (await cursor.fetchone()) == (False,)
    cursor = await db.execute("SELECT balance FROM accounts WHERE id = 'alice'")
    assert (await cursor.fetchone()) == (8_500,)
    assert [e[1] for e in await history(gql, "alice")] == ["DEPOSIT", "PAYMENT", "PAYMENT"]
    assert (await create(gql, "late"))["account"]["createdAt"] == 3_000

    # And the ledger still accepts an entry before the projected cashback.
    assert (await deposit(gql, "alice", 1, due1 - 1))["errors"] == []
    await audit()


async def test_sweeper_settles_due_cashback_of_an_idle_account(
    make_client: MakeClient, db: Conn, audit
) -> None:
    gql = await make_client(
        ClockMode.CLIENT, sweeper_enabled=True, sweeper=SweepLimits(interval_s=0.05)
    )
    await funded(gql, "alice", 1_000, ts=1_000)
    assert (await pay_quiet(gql, "alice", 1_000, 2_000))["errors"] == []
    due = 2_000 + DAY_MS

    # Not due yet: several sweeps go by and write nothing.
    await funded(gql, "clock", 0, ts=due - 1)
    await asyncio.sleep(0.3)
    assert await cashback_rows(db) == []

    # Now reaches the due time through another account; nobody reads alice.
    assert (await deposit(gql, "clock", 1, due))["errors"] == []
    assert await wait_until_cashback(db, 1) == [("alice", due, 20, 20, 1)]
    cursor = await db.execute(
        "SELECT a.balance, a.pending_cashback, p.settled FROM accounts a "
        "JOIN payments p ON p.account_id = a.id WHERE a.id = 'alice'"
    )
    assert (await cursor.fetchone()) == (20, 0, True)
    await audit()


async def test_without_sweeper_a_query_request_settles_everything_due_first(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    await funded(gql, "alice", 1_000, ts=1_000)
    await funded(gql, "carol", 5_000, ts=1_000)
    assert (await pay_quiet(gql, "alice", 1_000, 2_000))["errors"] == []
    assert (await pay_quiet(gql, "carol", 5_000, 2_500))["errors"] == []
    await funded(gql, "clock", 0, ts=2_500 + DAY_MS)
    assert await cashback_rows(db) == []

    # A query about another account settles every due cashback before it reads.
    data = await gql.ok('{ account(id: "clock") { id } }')
    assert data["account"] == {"id": "clock"}
    assert await cashback_rows(db) == [
        ("alice", 2_000 + DAY_MS, 20, 20, 1),
        ("carol", 2_500 + DAY_MS, 100, 100, 2),
    ]
    await audit()


async def test_a_mutation_settles_due_cashback_of_the_accounts_it_touches(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    await funded(gql, "alice", 1_000, ts=1_000)
    await funded(gql, "carol", 1_000, ts=1_000)
    assert (await pay_quiet(gql, "alice", 1_000, 2_000))["errors"] == []
    assert (await pay_quiet(gql, "carol", 1_000, 2_000))["errors"] == []
    due = 2_000 + DAY_MS
    await funded(gql, "bob", 0, ts=due + 100)
    assert await cashback_rows(db) == []

    # Due cashback is written before the order check: an entry before it is now too late.
    late = await gql.ok(DEPOSIT, {"id": "alice", "amount": 5, "ts": due - 1})
    assert [(e["code"], e["field"]) for e in late["deposit"]["errors"]] == [
        ("TIMESTAMP_OUT_OF_ORDER", ["input", "timestamp"])
    ]
    assert late["deposit"]["entry"] is None
    assert await cashback_rows(db) == [("alice", due, 20, 20, 1)]

    # Funds are checked after settlement: alice's whole balance is the cashback.
    moved = await transfer(gql, "alice", "bob", 20)
    assert moved["errors"] == []
    assert moved["balance"] == 0
    assert moved["entry"]["timestamp"] == due + 100

    # The target of a transfer is settled too, before its TRANSFER_IN.
    assert (await transfer(gql, "bob", "carol", 20, due + 200))["errors"] == []
    assert await cashback_rows(db) == [("alice", due, 20, 20, 1), ("carol", due, 20, 20, 2)]
    assert await history(gql, "alice") == [
        (1_000, "DEPOSIT", 1_000, 1_000, None),
        (2_000, "PAYMENT", 1_000, 0, "payment1"),
        (due, "CASHBACK", 20, 20, "payment1"),
        (due + 100, "TRANSFER_OUT", 20, 0, None),
    ]
    assert await history(gql, "carol") == [
        (1_000, "DEPOSIT", 1_000, 1_000, None),
        (2_000, "PAYMENT", 1_000, 0, "payment2"),
        (due, "CASHBACK", 20, 20, "payment2"),
        (due + 200, "TRANSFER_IN", 20, 40, None),
    ]
    await audit()


async def test_a_client_clock_mutation_settles_cashback_due_by_its_own_timestamp(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    await funded(gql, "alice", 1_000, ts=1_000)
    assert (await pay_quiet(gql, "alice", 500, 2_000))["errors"] == []
    due = 2_000 + DAY_MS
    # Now is 2 000; the deposit asks for a later instant, past the due time.
    later = await deposit(gql, "alice", 1, due + 5_000)
    assert later["errors"] == []
    assert later["balance"] == 511
    assert await cashback_rows(db) == [("alice", due, 10, 510, 1)]
    assert [e[:2] for e in await history(gql, "alice")] == [
        (1_000, "DEPOSIT"),
        (2_000, "PAYMENT"),
        (due, "CASHBACK"),
        (due + 5_000, "DEPOSIT"),
    ]
    await audit()


async def test_refused_mutation_writes_no_cashback_ahead_of_client_now(
    gql: GraphQLClient, db: Conn, audit
) -> None:
    """A mutation with errors changes nothing, and nothing is written for the future: a refused
    mutation asking for an instant past a due time must not credit cashback that the client
    clock has not reached."""
    await funded(gql, "alice", 1_000, ts=1_000)
    assert (await pay_quiet(gql, "alice", 1_000, 2_000))["errors"] == []
    due = 2_000 + DAY_MS
    refused = await pay_quiet(gql, "alice", 5_000, due + 10)
    assert [e["code"] for e in refused["errors"]] == ["INSUFFICIENT_FUNDS"]
    assert refused["payment"] is None
    assert await cashback_rows(db) == []
    # Now is still 2 000, so an entry before the due time is still in order.
    ok = await deposit(gql, "alice", 1, due - 1)
    assert ok["errors"] == []
    assert ok["entry"]["timestamp"] == due - 1
    await audit()


async def test_payments_listing_and_lookups(gql: GraphQLClient, audit) -> None:
    await funded(gql, "alice", 10_000, ts=1_000)
    await funded(gql, "bob", 10_000, ts=1_000)
    await funded(gql, "empty", 0, ts=1_000)
    assert (await pay_quiet(gql, "alice", 1_000, 2_000))["payment"]["id"] == "payment1"
    assert (await pay_quiet(gql, "bob", 300, 2_500))["payment"]["id"] == "payment2"
    refused = await pay_quiet(gql, "alice", 1_000_000, 3_000)
    assert [e["code"] for e in refused["errors"]] == ["INSUFFICIENT_FUNDS"]
    assert (await pay_quiet(gql, "alice", 200, 3_000))["payment"]["id"] == "payment3"
    assert (await pay_quiet(gql, "alice", 49, 4_000))["payment"]["id"] == "payment4"

    first = (await gql.ok(PAYMENTS, {"id": "alice", "first": 2}))["account"]["payments"]
    assert [e["node"]["id"] for e in first["edges"]] == ["payment1", "payment3"]
    assert first["nodes"] == [{"id": "payment1"}, {"id": "payment3"}]
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["endCursor"] == first["edges"][-1]["cursor"]
    assert first["edges"][0]["node"] == {
        "id": "payment1",
        "accountId": "alice",
        "timestamp": 2_000,
        "amount": 1_000,
        "cashback": 20,
        "cashbackDueAt": 2_000 + DAY_MS,
    }
    rest = (
        await gql.ok(PAYMENTS, {"id": "alice", "first": 2, "after": first["pageInfo"]["endCursor"]})
    )["account"]["payments"]
    assert [n["id"] for n in rest["nodes"]] == ["payment4"]
    assert rest["pageInfo"]["hasNextPage"] is False
    everything = (await gql.ok(PAYMENTS, {"id": "alice"}))["account"]["payments"]
    assert [n["id"] for n in everything["nodes"]] == ["payment1", "payment3", "payment4"]
    bobs = (await gql.ok(PAYMENTS, {"id": "bob"}))["account"]["payments"]
    assert [n["id"] for n in bobs["nodes"]] == ["payment2"]
    none = (await gql.ok(PAYMENTS, {"id": "empty"}))["account"]["payments"]
    assert none["edges"] == []
    assert none["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": False,
        "startCursor": None,
        "endCursor": None,
    }

    found = await gql.ok(PAYMENT, {"account": "bob", "id": "payment2", "at": 2_500 + DAY_MS})
    assert found["payment"] == {
        "id": "payment2",
        "accountId": "bob",
        "timestamp": 2_500,
        "amount": 300,
        "cashback": 6,
        "cashbackDueAt": 2_500 + DAY_MS,
        "status": "CASHBACK_RECEIVED",
    }
    assert await status(gql, "bob", "payment2") == "IN_PROGRESS"
    assert await status(gql, "bob", "payment2", 2_500 + DAY_MS - 1) == "IN_PROGRESS"

    # Through the wrong account, an unknown account, or an unknown or malformed id: null.
    for account_id, payment_id in [
        ("alice", "payment2"),
        ("bob", "payment1"),
        ("empty", "payment1"),
        ("nobody", "payment1"),
        ("alice", "payment5"),
        ("alice", "payment999999999999"),
        ("alice", "payment0"),
        ("alice", "payment01"),
        ("alice", "1"),
        ("alice", "PAYMENT1"),
        ("bad id!", "payment1"),
    ]:
        data = await gql.ok(PAYMENT, {"account": account_id, "id": payment_id, "at": None})
        assert data["payment"] is None, (account_id, payment_id)
    await audit()


async def test_balance_at_is_null_before_creation_and_exact_between_entries(
    gql: GraphQLClient, audit
) -> None:
    assert (await create(gql, "alice", 1_000))["errors"] == []
    await funded(gql, "bob", 0, ts=500)
    assert (await deposit(gql, "alice", 100, 2_000))["errors"] == []
    assert (await deposit(gql, "alice", 50, 2_000))["errors"] == []
    assert (await transfer(gql, "alice", "bob", 30, 3_000))["errors"] == []
    assert (await pay_quiet(gql, "alice", 100, 4_000))["errors"] == []
    assert (await deposit(gql, "alice", 7, 5_000))["errors"] == []
    due = 4_000 + DAY_MS
    await funded(gql, "clock", 0, ts=due + 1)

    expected = {
        0: None,
        999: None,
        1_000: 0,
        1_999: 0,
        2_000: 150,
        2_999: 150,
        3_000: 120,
        3_999: 120,
        4_000: 20,
        4_999: 20,
        5_000: 27,
        due - 1: 27,
        due: 29,
        due + 1: 29,
        due + 10 * DAY_MS: 29,
    }
    for at, value in expected.items():
        assert await balance(gql, "alice", at) == value, at
    assert await balance(gql, "alice") == 29
    assert await balance(gql, "bob", 499) is None
    assert await balance(gql, "bob", 500) == 0
    assert await balance(gql, "bob", 3_000) == 30
    await audit()
