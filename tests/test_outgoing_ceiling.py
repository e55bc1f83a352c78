"""`outgoing` is a reporting total: it saturates at 2^53-1, so no money movement is ever
refused or fails because of it, and every read of it answers, even on a database that
already holds a larger total."""

from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient
from tests.operations import (
    MAX_MONEY,
    MERGE,
    batch,
    batch_item,
    create,
    deposit,
    item_codes,
    pay,
)

Db = psycopg.AsyncConnection[Any]
BIGINT_MAX = 2**63 - 1

MOVE = """
mutation($from: ID!, $to: ID!, $amount: Money!, $key: String) {
  transfer(input: {sourceAccountId: $from, targetAccountId: $to, amount: $amount,
                   idempotencyKey: $key}) {
    balance
    sourceAccount { id outgoing }
    targetAccount { id outgoing }
    errors { code message }
  }
}"""

READS = """
query($id: ID!) {
  account(id: $id) { outgoing balance }
  topSpenders(first: 10) { accountId outgoing }
  accounts(first: 10) { nodes { id outgoing } }
}"""


async def move(
    gql: GraphQLClient, source: str, target: str, amount: int, key: str | None = None
) -> dict[str, Any]:
    """A transfer that must succeed; its payload, with both accounts' outgoing."""
    variables = {"from": source, "to": target, "amount": amount, "key": key}
    payload: dict[str, Any] = (await gql.ok(MOVE, variables))["transfer"]
    assert payload["errors"] == [], payload
    return payload


async def outgoing_everywhere(gql: GraphQLClient, account: str) -> set[int]:
    """`account`'s outgoing as each read reports it."""
    data = await gql.ok(READS, {"id": account})
    return {
        data["account"]["outgoing"],
        *(s["outgoing"] for s in data["topSpenders"] if s["accountId"] == account),
        *(n["outgoing"] for n in data["accounts"]["nodes"] if n["id"] == account),
    }


async def test_outgoing_saturates_at_the_money_ceiling(gql: GraphQLClient, audit: Any) -> None:
    for account in ("a", "b"):
        assert (await create(gql, account, 1_000))["errors"] == []
    assert (await deposit(gql, "a", MAX_MONEY, 1_000))["errors"] == []

    first = await move(gql, "a", "b", MAX_MONEY)
    assert first["sourceAccount"] == {"id": "a", "outgoing": MAX_MONEY}
    back = await move(gql, "b", "a", MAX_MONEY)
    assert back["sourceAccount"] == {"id": "b", "outgoing": MAX_MONEY}
    again = await move(gql, "a", "b", MAX_MONEY)
    assert again["sourceAccount"] == {"id": "a", "outgoing": MAX_MONEY}
    assert again["targetAccount"] == {"id": "b", "outgoing": MAX_MONEY}

    assert await outgoing_everywhere(gql, "a") == {MAX_MONEY}
    assert await outgoing_everywhere(gql, "b") == {MAX_MONEY}
    await audit()


async def test_writes_keep_working_long_past_where_bigint_would_overflow(
    gql: GraphQLClient, audit: Any
) -> None:
    for account in ("a", "b", "c"):
        assert (await create(gql, account, 1_000))["errors"] == []
    assert (await deposit(gql, "a", MAX_MONEY, 1_000))["errors"] == []
    back_and_forth = [
        batch_item("a", "b", MAX_MONEY) if i % 2 == 0 else batch_item("b", "a", MAX_MONEY)
        for i in range(700)
    ]
    # 1050 transfers of 2^53-1 out of each account: their sum is past 2^63-1.
    for _ in range(3):
        moved = await batch(gql, back_and_forth)
        assert set(item_codes(moved)) == {"OK"}
        assert {r["sourceAccount"]["outgoing"] for r in moved["results"][1:]} == {MAX_MONEY}
    assert 1050 * MAX_MONEY > BIGINT_MAX

    paid = [await pay(gql, "a", 100) for _ in range(2)]
    assert [p["errors"] for p in paid] == [[], []]
    assert [p["payment"]["id"] for p in paid] == ["payment1", "payment2"]
    assert (await move(gql, "a", "c", 1))["sourceAccount"]["outgoing"] == MAX_MONEY
    merged = (await gql.ok(MERGE, {"a": "c", "b": "a"}))["mergeAccounts"]
    assert merged["errors"] == []
    assert merged["account"]["outgoing"] == MAX_MONEY
    assert await outgoing_everywhere(gql, "c") == {MAX_MONEY}
    await audit()


@pytest.mark.parametrize("clock", [ClockMode.SYSTEM, ClockMode.CLIENT])
async def test_a_total_already_past_the_ceiling_reads_as_the_ceiling(
    make_client: MakeClient, db: Db, clock: ClockMode
) -> None:
    """As a database written by an earlier version may hold it: every read answers, and
    every write (the one-statement transfer of the system clock too) saturates it."""
    gql = await make_client(clock)
    for account in ("a", "b"):
        assert (await create(gql, account, 1_000))["errors"] == []
        assert (await deposit(gql, account, 1_000, 1_000))["errors"] == []
    stored = await move(gql, "a", "b", 1, key="stored")
    assert stored["sourceAccount"]["outgoing"] == 1
    await db.execute("UPDATE accounts SET outgoing = %s", (BIGINT_MAX - 10,))

    assert await outgoing_everywhere(gql, "a") == {MAX_MONEY}
    replayed = await move(gql, "a", "b", 1, key="stored")
    assert replayed["sourceAccount"]["outgoing"] == 1, "the stored answer, as it was"
    moved = await move(gql, "a", "b", 100)
    assert moved["sourceAccount"] == {"id": "a", "outgoing": MAX_MONEY}
    assert moved["targetAccount"] == {"id": "b", "outgoing": MAX_MONEY}
    keyed = await move(gql, "b", "a", 100, key="new")
    assert keyed["sourceAccount"]["outgoing"] == MAX_MONEY
    paid = await pay(gql, "a", 10)
    assert paid["errors"] == []
    assert paid["payment"]["id"] == "payment1"
    assert await outgoing_everywhere(gql, "b") == {MAX_MONEY}
