"""mergeAccounts: every refusal (and that it changes nothing), the paired MERGE_OUT/MERGE_IN
entries, the absorbed account vanishing from the API while its rows stay, payments, pending
cashback and outgoing moving to the survivor (through merge chains too), the survivor's own
history, a merge at a cashback's due time, and idempotency keys."""

import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import table_rows
from tests.operations import (
    CREATE,
    DAY_MS,
    DEPOSIT,
    HISTORY,
    MAX_MONEY,
    PAY,
    TOP_SPENDERS,
    TRANSFER,
    account,
    balance,
    create,
    deposit,
    funded,
    merge,
    merge_payload,
    pay,
    payment,
    transfer,
)

Audit = Callable[[], Awaitable[None]]
Conn = psycopg.AsyncConnection[Any]

ACCOUNTS = """
query { accounts(first: 100) { nodes { id } pageInfo { hasNextPage } } }"""

PAYMENTS = """
query($id: ID!) {
  account(id: $id) {
    payments(first: 100) {
      nodes { id accountId timestamp amount cashback }
      pageInfo { hasNextPage }
    }
  }
}"""


# -- helpers ----------------------------------------------------------------------------------


def refusal(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def history(gql: GraphQLClient, account_id: str) -> list[tuple[Any, ...]]:
    """(timestamp, kind, amount, balanceAfter, counterpartyId, paymentId), oldest first."""
    data = await gql.ok(HISTORY, {"id": account_id, "first": 100})
    assert data["account"] is not None, account_id
    connection = data["account"]["transactions"]
    assert connection["pageInfo"]["hasNextPage"] is False
    return [
        (
            n["timestamp"],
            n["kind"],
            n["amount"],
            n["balanceAfter"],
            n["counterpartyId"],
            n["paymentId"],
        )
        for n in (edge["node"] for edge in connection["edges"])
    ]


async def db_entries(db: Conn, account_id: str) -> list[tuple[Any, ...]]:
    """The same tuples as `history`, read from the table (works for merged accounts too)."""
    cursor = await db.execute(
        "SELECT ts, kind::text, amount, balance_after, counterparty_id, payment_id"
        " FROM entries WHERE account_id = %s ORDER BY ts, id",
        (account_id,),
    )
    return [
        (ts, kind, amount, after, cp, None if pid is None else f"payment{pid}")
        for ts, kind, amount, after, cp, pid in await cursor.fetchall()
    ]


async def account_row(db: Conn, account_id: str) -> tuple[Any, ...]:
    cursor = await db.execute(
        "SELECT survivor_id, merged_into, merged_at, balance FROM accounts WHERE id = %s",
        (account_id,),
    )
    row = await cursor.fetchone()
    assert row is not None, account_id
    return tuple(row)


def present(value: dict[str, Any] | None) -> dict[str, Any]:
    assert value is not None
    return value


async def payments(gql: GraphQLClient, account_id: str) -> list[tuple[str, str]]:
    """(id, accountId) of the account's payments, in the order listed."""
    data = await gql.ok(PAYMENTS, {"id": account_id})
    connection = data["account"]["payments"]
    assert connection["pageInfo"]["hasNextPage"] is False
    return [(n["id"], n["accountId"]) for n in connection["nodes"]]


async def top_spenders(gql: GraphQLClient) -> list[tuple[str, int]]:
    data = await gql.ok(TOP_SPENDERS, {"first": 100})
    return [(s["accountId"], s["outgoing"]) for s in data["topSpenders"]]


# -- success ----------------------------------------------------------------------------------


async def test_merge_moves_the_whole_balance_with_paired_entries(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "A", 1_000)
    await funded(gql, "B", 300, 1_500)
    merged = await merge(gql, "A", "B", 2_000)
    assert merged["balance"] == 1_300
    assert merged["account"]["id"] == "A"
    assert merged["account"]["createdAt"] == 1_000
    assert await history(gql, "A") == [
        (1_000, "DEPOSIT", 1_000, 1_000, None, None),
        (2_000, "MERGE_IN", 300, 1_300, "B", None),
    ]
    assert await db_entries(db, "B") == [
        (1_500, "DEPOSIT", 300, 300, None, None),
        (2_000, "MERGE_OUT", 300, 0, "A", None),
    ]
    assert await balance(gql, "A") == 1_300
    await audit()


async def test_merge_of_an_empty_account_writes_two_zero_entries(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "A", 40)
    await funded(gql, "B", 0)
    merged = await merge(gql, "A", "B", 1_000)
    assert merged["balance"] == 40
    assert await history(gql, "A") == [
        (1_000, "DEPOSIT", 40, 40, None, None),
        (1_000, "MERGE_IN", 0, 40, "B", None),
    ]
    assert await db_entries(db, "B") == [(1_000, "MERGE_OUT", 0, 0, "A", None)]
    assert await account(gql, "B") is None
    await audit()


async def test_merge_without_timestamp_uses_now_on_the_client_clock(
    gql: GraphQLClient, db: Conn
) -> None:
    await funded(gql, "A", 10, 1_000)
    await funded(gql, "B", 5, 1_000)
    await funded(gql, "C", 1, 7_000)  # moves now to 7_000
    merged = await merge(gql, "A", "B")
    assert merged["balance"] == 15
    assert (await history(gql, "A"))[-1] == (7_000, "MERGE_IN", 5, 15, "B", None)
    assert (await db_entries(db, "B"))[-1] == (7_000, "MERGE_OUT", 5, 0, "A", None)


async def test_merge_on_the_system_clock(make_client: MakeClient, db: Conn) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    assert (await create(gql, "A"))["errors"] == []
    assert (await create(gql, "B"))["errors"] == []
    assert (await deposit(gql, "B", 25))["errors"] == []
    future = time.time_ns() // 1_000_000 + 3_600_000
    refused = await merge_payload(gql, "A", "B", future)
    assert refusal(refused) == [("INVALID_TIMESTAMP", ["input", "timestamp"])]
    assert refused["balance"] is None
    before = time.time_ns() // 1_000_000
    merged = await merge(gql, "A", "B")
    after = time.time_ns() // 1_000_000
    assert merged["balance"] == 25
    [(ts, kind, amount, after_balance, counterparty, _)] = await history(gql, "A")
    assert (kind, amount, after_balance, counterparty) == ("MERGE_IN", 25, 25, "B")
    assert before <= ts <= after
    assert (await db_entries(db, "B"))[-1][:5] == (ts, "MERGE_OUT", 25, 0, "A")


# -- refusals ---------------------------------------------------------------------------------


async def test_same_account_is_refused_and_changes_nothing(gql: GraphQLClient, db: Conn) -> None:
    await funded(gql, "A", 100)
    before = await table_rows(db)
    refused = await merge_payload(gql, "A", "A", 2_000)
    assert refusal(refused) == [("SAME_ACCOUNT", ["input", "absorbedAccountId"])]
    assert refused["balance"] is None
    assert refused["account"] is None
    assert await table_rows(db) == before


async def test_unknown_accounts_are_refused_naming_the_field(gql: GraphQLClient, db: Conn) -> None:
    await funded(gql, "A", 100)
    before = await table_rows(db)
    refused = await merge_payload(gql, "nobody", "A", 2_000)
    assert refusal(refused) == [("ACCOUNT_NOT_FOUND", ["input", "accountId"])]
    assert refused["balance"] is None
    refused = await merge_payload(gql, "A", "nobody", 2_000)
    assert refusal(refused) == [("ACCOUNT_NOT_FOUND", ["input", "absorbedAccountId"])]
    assert refused["balance"] is None
    assert await table_rows(db) == before
    assert await balance(gql, "A") == 100


async def test_invalid_account_ids_are_refused_naming_the_field(
    gql: GraphQLClient, db: Conn
) -> None:
    await funded(gql, "A", 100)
    before = await table_rows(db)
    refused = await merge_payload(gql, "bad id!", "A", 2_000)
    assert refusal(refused) == [("INVALID_ACCOUNT_ID", ["input", "accountId"])]
    refused = await merge_payload(gql, "A", "-leading-dash", 2_000)
    assert refusal(refused) == [("INVALID_ACCOUNT_ID", ["input", "absorbedAccountId"])]
    refused = await merge_payload(gql, "A", "x" * 65, 2_000)
    assert refusal(refused) == [("INVALID_ACCOUNT_ID", ["input", "absorbedAccountId"])]
    assert await table_rows(db) == before


async def test_timestamp_before_either_accounts_newest_entry_is_refused(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "A", 100, 1_000)
    await funded(gql, "B", 50, 1_000)
    await deposit(gql, "A", 1, 5_000)
    await funded(gql, "C", 20, 1_000)
    await funded(gql, "D", 10, 1_000)
    await deposit(gql, "D", 1, 6_000)
    before = await table_rows(db)
    # The survivor's newest entry is the later one.
    refused = await merge_payload(gql, "A", "B", 4_999)
    assert refusal(refused) == [("TIMESTAMP_OUT_OF_ORDER", ["input", "timestamp"])]
    assert refused["balance"] is None
    # The absorbed account's newest entry is the later one.
    refused = await merge_payload(gql, "C", "D", 5_999)
    assert refusal(refused) == [("TIMESTAMP_OUT_OF_ORDER", ["input", "timestamp"])]
    assert await table_rows(db) == before
    # Creation counts as the newest "entry" of an account with none.
    assert (await create(gql, "E", 8_000))["errors"] == []
    before = await table_rows(db)
    refused = await merge_payload(gql, "E", "C", 7_999)
    assert refusal(refused) == [("TIMESTAMP_OUT_OF_ORDER", ["input", "timestamp"])]
    assert await table_rows(db) == before
    # Equal to the newest entry is fine.
    assert (await merge(gql, "A", "B", 5_000))["balance"] == 151
    assert (await merge(gql, "C", "D", 6_000))["balance"] == 31
    assert (await merge(gql, "E", "C", 8_000))["balance"] == 31
    await audit()


async def test_balance_overflow_counts_both_accounts_pending_cashback(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "A", 1_000_000, 1_000)
    assert (await pay(gql, "A", 100_000, 1_000))["errors"] == []  # 2_000 pending
    await funded(gql, "B", 10_000, 1_000)
    assert (await pay(gql, "B", 5_000, 1_000))["errors"] == []  # 100 pending
    # A: balance + pending = MAX - 5_100 + 1, so with B's 5_000 + 100 one unit too many,
    # although the two balances alone (MAX - 2_099) would fit.
    top_up = MAX_MONEY - 900_000 - 2_000 - 5_000 - 100 + 1
    assert (await deposit(gql, "A", top_up, 2_000))["errors"] == []
    before = await table_rows(db)
    refused = await merge_payload(gql, "A", "B", 3_000)
    assert refusal(refused) == [("BALANCE_OVERFLOW", ["input", "absorbedAccountId"])]
    assert refused["balance"] is None
    assert await table_rows(db) == before
    # One unit less (a payment of 1 has a 0 cashback) and the total is exactly the ceiling.
    assert (await pay(gql, "A", 1, 3_000))["errors"] == []
    merged = await merge(gql, "A", "B", 3_000)
    assert merged["balance"] == MAX_MONEY - 2_100
    assert await balance(gql, "A", 1_000 + DAY_MS) == MAX_MONEY
    await audit()


async def test_refused_merge_ahead_of_now_writes_no_future_cashback(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "B", 1_000, 1_000)
    assert (await pay(gql, "B", 1_000, 1_000))["errors"] == []  # cashback 20 pending
    await funded(gql, "A", MAX_MONEY - 19, 1_000)  # with B's 20 pending: one unit too many
    due = 1_000 + DAY_MS
    before = await table_rows(db)
    # Stamped after the cashback's due time while now is still 1_000: refused, so the
    # cashback it would have credited first must not be written ahead of time.
    refused = await merge_payload(gql, "A", "B", due + 5)
    assert refusal(refused) == [("BALANCE_OVERFLOW", ["input", "absorbedAccountId"])]
    assert await table_rows(db) == before
    assert await balance(gql, "B") == 0
    # When now reaches the due time, B itself gets its cashback.
    await funded(gql, "clock", 0, due + 10)
    assert await balance(gql, "B") == 20
    assert (await history(gql, "B"))[-1] == (due, "CASHBACK", 20, 20, None, "payment1")
    await audit()


# -- after the merge, the absorbed account is gone for the API ----------------------------------


async def test_absorbed_account_no_longer_exists_but_its_rows_stay(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "A", 100)
    await funded(gql, "B", 70)
    await funded(gql, "C", 10)
    await transfer(gql, "B", "C", 20, 1_500)
    await merge(gql, "A", "B", 2_000)

    assert await account(gql, "B") is None
    assert await account(gql, "A") == {"id": "A", "balance": 150, "outgoing": 20}
    listed = (await gql.ok(ACCOUNTS))["accounts"]
    assert [n["id"] for n in listed["nodes"]] == ["A", "C"]
    assert ("B", 20) not in await top_spenders(gql)
    assert [s[0] for s in await top_spenders(gql)] == ["A", "C"]

    before = await table_rows(db)
    not_found = [("ACCOUNT_NOT_FOUND", ["input", "accountId"])]
    refused = (await gql.ok(DEPOSIT, {"id": "B", "amount": 5, "ts": 3_000}))["deposit"]
    assert refusal(refused) == not_found
    refused = (await gql.ok(PAY, {"id": "B", "amount": 5, "ts": 3_000}))["pay"]
    assert refusal(refused) == not_found
    variables = {"from": "B", "to": "C", "amount": 5, "ts": 3_000}
    refused = (await gql.ok(TRANSFER, variables))["transfer"]
    assert refusal(refused) == [("ACCOUNT_NOT_FOUND", ["input", "sourceAccountId"])]
    variables = {"from": "C", "to": "B", "amount": 5, "ts": 3_000}
    refused = (await gql.ok(TRANSFER, variables))["transfer"]
    assert refusal(refused) == [("ACCOUNT_NOT_FOUND", ["input", "targetAccountId"])]
    refused = await merge_payload(gql, "B", "C", 3_000)
    assert refusal(refused) == not_found
    refused = await merge_payload(gql, "C", "B", 3_000)
    assert refusal(refused) == [("ACCOUNT_NOT_FOUND", ["input", "absorbedAccountId"])]
    refused = await merge_payload(gql, "A", "B", 3_000)
    assert refusal(refused) == [("ACCOUNT_NOT_FOUND", ["input", "absorbedAccountId"])]
    refused = (await gql.ok(CREATE, {"id": "B", "ts": 3_000}))["createAccount"]
    assert [e["code"] for e in refused["errors"]] == ["ACCOUNT_ALREADY_EXISTS"]
    assert refused["account"] is None
    assert await table_rows(db) == before

    assert await account_row(db, "B") == ("A", "A", 2_000, 0)
    assert await account_row(db, "A") == ("A", None, None, 150)
    assert await db_entries(db, "B") == [
        (1_000, "DEPOSIT", 70, 70, None, None),
        (1_500, "TRANSFER_OUT", 20, 50, "C", None),
        (2_000, "MERGE_OUT", 50, 0, "A", None),
    ]
    await audit()


# -- payments, cashback and outgoing move to the survivor ---------------------------------------


async def test_absorbed_payments_are_found_and_listed_through_the_survivor(
    gql: GraphQLClient, audit: Audit
) -> None:
    await funded(gql, "A", 1_000)
    await funded(gql, "B", 1_000)
    assert (await pay(gql, "A", 100, 1_100))["payment"]["id"] == "payment1"
    assert (await pay(gql, "B", 200, 1_200))["payment"]["id"] == "payment2"
    assert (await pay(gql, "A", 300, 1_300))["payment"]["id"] == "payment3"
    assert (await pay(gql, "B", 400, 1_400))["payment"]["id"] == "payment4"
    await merge(gql, "A", "B", 2_000)
    assert (await pay(gql, "A", 50, 2_500))["payment"]["id"] == "payment5"

    found = await payment(gql, "A", "payment2")
    assert found == {
        "id": "payment2",
        "accountId": "A",
        "timestamp": 1_200,
        "amount": 200,
        "cashback": 4,
        "cashbackDueAt": 1_200 + DAY_MS,
        "status": "IN_PROGRESS",
    }
    assert present(await payment(gql, "A", "payment4"))["accountId"] == "A"
    assert await payment(gql, "B", "payment2") is None
    assert await payment(gql, "B", "payment4") is None
    assert await payment(gql, "B", "payment1") is None
    assert await payments(gql, "A") == [
        ("payment1", "A"),
        ("payment2", "A"),
        ("payment3", "A"),
        ("payment4", "A"),
        ("payment5", "A"),
    ]
    await audit()


async def test_absorbed_pending_cashback_is_credited_to_the_survivor_when_due(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "A", 500, 1_000)
    await funded(gql, "B", 1_000, 1_000)
    assert (await pay(gql, "B", 600, 1_000))["errors"] == []  # payment1: cashback 12
    due = 1_000 + DAY_MS
    merged = await merge(gql, "A", "B", 2_000)
    assert merged["balance"] == 900
    # Not due yet: nothing written, but the projection counts it on A.
    assert await balance(gql, "A") == 900
    assert await balance(gql, "A", due - 1) == 900
    assert await balance(gql, "A", due) == 912
    assert present(await payment(gql, "A", "payment1", due - 1))["status"] == "IN_PROGRESS"
    assert present(await payment(gql, "A", "payment1", due))["status"] == "CASHBACK_RECEIVED"

    assert (await deposit(gql, "A", 3, due + 5))["errors"] == []
    assert await history(gql, "A") == [
        (1_000, "DEPOSIT", 500, 500, None, None),
        (2_000, "MERGE_IN", 400, 900, "B", None),
        (due, "CASHBACK", 12, 912, None, "payment1"),
        (due + 5, "DEPOSIT", 3, 915, None, None),
    ]
    assert await db_entries(db, "B") == [
        (1_000, "DEPOSIT", 1_000, 1_000, None, None),
        (1_000, "PAYMENT", 600, 400, None, "payment1"),
        (2_000, "MERGE_OUT", 400, 0, "A", None),
    ]
    assert present(await payment(gql, "A", "payment1"))["status"] == "CASHBACK_RECEIVED"
    assert await account_row(db, "B") == ("A", "A", 2_000, 0)
    await audit()


async def test_absorbed_cashback_is_settled_by_a_read_of_the_survivor(
    gql: GraphQLClient, audit: Audit
) -> None:
    await funded(gql, "A", 0, 1_000)
    await funded(gql, "B", 1_000, 1_000)
    await pay(gql, "B", 1_000, 1_000)  # cashback 20
    await merge(gql, "A", "B", 2_000)
    due = 1_000 + DAY_MS
    await funded(gql, "clock", 0, due)  # moves now to the due time, touching neither A nor B
    assert await balance(gql, "A") == 20
    assert (await history(gql, "A"))[-1] == (due, "CASHBACK", 20, 20, None, "payment1")
    await audit()


async def test_absorbed_outgoing_adds_to_the_survivor(gql: GraphQLClient, audit: Audit) -> None:
    await funded(gql, "A", 1_000)
    await funded(gql, "B", 1_000)
    await funded(gql, "X", 0)
    await funded(gql, "Y", 0)
    await transfer(gql, "A", "X", 100, 1_100)
    await pay(gql, "A", 50, 1_200)
    await transfer(gql, "B", "Y", 300, 1_300)
    await pay(gql, "B", 200, 1_400)
    await transfer(gql, "X", "Y", 10, 1_500)
    assert await top_spenders(gql) == [("B", 500), ("A", 150), ("X", 10), ("Y", 0)]

    merged = await merge(gql, "A", "B", 2_000)
    assert merged["account"]["outgoing"] == 650
    assert present(await account(gql, "A"))["outgoing"] == 650
    assert await top_spenders(gql) == [("A", 650), ("X", 10), ("Y", 0)]
    # Merging does not count as outgoing, for the survivor nor (later) for its own survivor.
    await merge(gql, "Y", "X", 2_500)
    assert await top_spenders(gql) == [("A", 650), ("Y", 10)]
    # Cashback never counts; later spending adds as usual.
    await deposit(gql, "A", 1, 1_400 + DAY_MS)
    await transfer(gql, "A", "Y", 5, 1_400 + DAY_MS)
    assert await top_spenders(gql) == [("A", 655), ("Y", 10)]
    assert present(await account(gql, "A"))["outgoing"] == 655
    await audit()


# -- merge chains -----------------------------------------------------------------------------


async def test_merge_chain_gives_everything_to_the_last_survivor(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "A", 1_000, 1_000)
    await funded(gql, "B", 1_000, 1_000)
    await funded(gql, "C", 100, 1_000)
    await funded(gql, "X", 0, 1_000)
    assert (await pay(gql, "B", 500, 1_000))["payment"]["id"] == "payment1"  # cashback 10
    assert (await pay(gql, "A", 250, 1_100))["payment"]["id"] == "payment2"  # cashback 5
    await transfer(gql, "A", "X", 50, 1_200)
    await transfer(gql, "C", "X", 30, 1_300)
    assert (await pay(gql, "C", 10, 1_400))["payment"]["id"] == "payment3"  # cashback 0

    assert (await merge(gql, "A", "B", 2_000))["balance"] == 1_200
    assert (await merge(gql, "C", "A", 3_000))["balance"] == 1_260

    assert await account(gql, "A") is None
    assert await account(gql, "B") is None
    assert await account(gql, "C") == {"id": "C", "balance": 1_260, "outgoing": 840}
    assert await top_spenders(gql) == [("C", 840), ("X", 0)]
    for number in ("payment1", "payment2", "payment3"):
        found = await payment(gql, "C", number)
        assert found is not None, number
        assert found["accountId"] == "C"
        assert await payment(gql, "A", number) is None
        assert await payment(gql, "B", number) is None
    assert await payments(gql, "C") == [
        ("payment1", "C"),
        ("payment2", "C"),
        ("payment3", "C"),
    ]
    assert await account_row(db, "B") == ("C", "A", 2_000, 0)
    assert await account_row(db, "A") == ("C", "C", 3_000, 0)

    # B's and A's cashback, both due after the merges, land on C.
    await deposit(gql, "C", 1, 1_100 + DAY_MS)
    assert await history(gql, "C") == [
        (1_000, "DEPOSIT", 100, 100, None, None),
        (1_300, "TRANSFER_OUT", 30, 70, "X", None),
        (1_400, "PAYMENT", 10, 60, None, "payment3"),
        (3_000, "MERGE_IN", 1_200, 1_260, "A", None),
        (1_000 + DAY_MS, "CASHBACK", 10, 1_270, None, "payment1"),
        (1_100 + DAY_MS, "CASHBACK", 5, 1_275, None, "payment2"),
        (1_100 + DAY_MS, "DEPOSIT", 1, 1_276, None, None),
    ]
    assert await db_entries(db, "A") == [
        (1_000, "DEPOSIT", 1_000, 1_000, None, None),
        (1_100, "PAYMENT", 250, 750, None, "payment2"),
        (1_200, "TRANSFER_OUT", 50, 700, "X", None),
        (2_000, "MERGE_IN", 500, 1_200, "B", None),
        (3_000, "MERGE_OUT", 1_200, 0, "C", None),
    ]
    assert await db_entries(db, "B") == [
        (1_000, "DEPOSIT", 1_000, 1_000, None, None),
        (1_000, "PAYMENT", 500, 500, None, "payment1"),
        (2_000, "MERGE_OUT", 500, 0, "A", None),
    ]
    found = await payment(gql, "C", "payment1")
    assert found is not None
    assert found["status"] == "CASHBACK_RECEIVED"
    await audit()


async def test_survivor_of_a_chain_can_merge_again(gql: GraphQLClient, audit: Audit) -> None:
    await funded(gql, "A", 10)
    await funded(gql, "B", 20)
    await funded(gql, "C", 40)
    await pay(gql, "B", 5, 1_000)
    await merge(gql, "A", "B", 2_000)
    # The other way round than C absorbing A: A (holding B) absorbs C.
    assert (await merge(gql, "A", "C", 3_000))["balance"] == 65
    assert await payments(gql, "A") == [("payment1", "A")]
    assert [n["id"] for n in (await gql.ok(ACCOUNTS))["accounts"]["nodes"]] == ["A"]
    await audit()


# -- the survivor's own history ---------------------------------------------------------------


async def test_survivor_balance_before_the_merge_is_its_own_history(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "B", 500, 1_000)
    await funded(gql, "A", 100, 2_000)
    await deposit(gql, "A", 50, 2_500)
    await deposit(gql, "B", 25, 2_600)
    instants = [1_500, 2_000, 2_499, 2_500, 2_999]
    before = [await balance(gql, "A", at) for at in instants]
    assert before == [None, 100, 100, 150, 150]

    assert (await merge(gql, "A", "B", 3_000))["balance"] == 675
    await deposit(gql, "A", 7, 4_000)

    assert [await balance(gql, "A", at) for at in instants] == before
    assert await balance(gql, "A", 3_000) == 675
    assert await balance(gql, "A", 3_999) == 675
    assert await balance(gql, "A", 4_000) == 682
    assert await history(gql, "A") == [
        (2_000, "DEPOSIT", 100, 100, None, None),
        (2_500, "DEPOSIT", 50, 150, None, None),
        (3_000, "MERGE_IN", 525, 675, "B", None),
        (4_000, "DEPOSIT", 7, 682, None, None),
    ]
    # B's entries stay on B.
    assert await db_entries(db, "B") == [
        (1_000, "DEPOSIT", 500, 500, None, None),
        (2_600, "DEPOSIT", 25, 525, None, None),
        (3_000, "MERGE_OUT", 525, 0, "A", None),
    ]
    await audit()


# -- a merge at exactly a cashback's due time ---------------------------------------------------


async def test_merge_at_a_cashback_due_time_writes_the_cashback_first(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "A", 1_000, 1_000)
    await funded(gql, "B", 500, 1_000)
    assert (await pay(gql, "A", 500, 1_000))["payment"]["id"] == "payment1"  # cashback 10
    assert (await pay(gql, "B", 100, 1_000))["payment"]["id"] == "payment2"  # cashback 2
    due = 1_000 + DAY_MS

    merged = await merge(gql, "A", "B", due)
    assert merged["balance"] == 912
    assert await db_entries(db, "B") == [
        (1_000, "DEPOSIT", 500, 500, None, None),
        (1_000, "PAYMENT", 100, 400, None, "payment2"),
        (due, "CASHBACK", 2, 402, None, "payment2"),
        (due, "MERGE_OUT", 402, 0, "A", None),
    ]
    assert await history(gql, "A") == [
        (1_000, "DEPOSIT", 1_000, 1_000, None, None),
        (1_000, "PAYMENT", 500, 500, None, "payment1"),
        (due, "CASHBACK", 10, 510, None, "payment1"),
        (due, "MERGE_IN", 402, 912, "B", None),
    ]
    # Settled exactly once: nothing more appears later.
    await deposit(gql, "A", 1, due + DAY_MS)
    assert [e[1] for e in await history(gql, "A")].count("CASHBACK") == 1
    assert await balance(gql, "A") == 913
    await audit()


async def test_merge_stamped_before_a_due_cashback_is_out_of_order(
    gql: GraphQLClient, audit: Audit
) -> None:
    await funded(gql, "A", 0, 1_000)
    await funded(gql, "B", 100, 1_000)
    await pay(gql, "B", 100, 1_000)  # cashback 2, due 1_000 + DAY_MS
    due = 1_000 + DAY_MS
    await funded(gql, "clock", 0, due + 10)
    refused = await merge_payload(gql, "A", "B", due - 1)
    assert refusal(refused) == [("TIMESTAMP_OUT_OF_ORDER", ["input", "timestamp"])]
    merged = await merge(gql, "A", "B", due)
    assert merged["balance"] == 2
    await audit()


# -- idempotency ------------------------------------------------------------------------------


async def test_merge_replays_under_its_idempotency_key(
    gql: GraphQLClient, db: Conn, audit: Audit
) -> None:
    await funded(gql, "A", 100)
    await funded(gql, "B", 30)
    await funded(gql, "C", 7)
    first = await merge(gql, "A", "B", 2_000, key="merge-1")
    assert first["balance"] == 130
    after_first = await table_rows(db)

    replay = await merge_payload(gql, "A", "B", 2_000, key="merge-1")
    assert replay["errors"] == []
    assert replay["balance"] == 130
    assert replay["account"]["id"] == "A"
    assert await table_rows(db) == after_first

    # Still the same outcome after the survivor has moved on.
    await deposit(gql, "A", 5, 3_000)
    after_deposit = await table_rows(db)
    replay = await merge_payload(gql, "A", "B", 2_000, key="merge-1")
    assert replay["errors"] == []
    assert replay["balance"] == 130
    assert await table_rows(db) == after_deposit

    # The same key with another input, or for another mutation, is refused.
    for survivor, absorbed, ts in [("A", "B", 3_000), ("A", "C", 2_000), ("C", "A", 3_000)]:
        refused = await merge_payload(gql, survivor, absorbed, ts, key="merge-1")
        assert [e["code"] for e in refused["errors"]] == ["IDEMPOTENCY_KEY_REUSED"], refused
        assert refused["balance"] is None
    variables = {"id": "A", "amount": 5, "ts": 3_000, "key": "merge-1"}
    refused = (await gql.ok(DEPOSIT, variables))["deposit"]
    assert [e["code"] for e in refused["errors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    assert await table_rows(db) == after_deposit
    assert await account(gql, "C") == {"id": "C", "balance": 7, "outgoing": 0}
    await audit()


async def test_refused_merge_outcome_is_replayed_under_its_key(
    gql: GraphQLClient, db: Conn
) -> None:
    await funded(gql, "A", 100)
    refused = await merge_payload(gql, "A", "late", 2_000, key="merge-2")
    assert refusal(refused) == [("ACCOUNT_NOT_FOUND", ["input", "absorbedAccountId"])]
    await funded(gql, "late", 9, 1_500)
    before = await table_rows(db)
    replay = await merge_payload(gql, "A", "late", 2_000, key="merge-2")
    assert refusal(replay) == [("ACCOUNT_NOT_FOUND", ["input", "absorbedAccountId"])]
    assert replay["balance"] is None
    assert await table_rows(db) == before
    # Without the key (or with a fresh one) the merge runs.
    assert (await merge(gql, "A", "late", 2_000, key="merge-3"))["balance"] == 109
