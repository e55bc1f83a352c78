"""On the system clock an unkeyed transfer runs as one SQL statement (ledger_transfer in
schema.sql). It must answer exactly as the general path does, which the client clock and
idempotency keys still take."""

import time
from typing import Any

import pytest

from bank_graphql.ledger import ClockMode
from tests.conftest import GraphQLClient, MakeClient
from tests.operations import DAY_MS, HISTORY, TRANSFER, pay

MAX_MONEY = 2**53 - 1

KEYED_TRANSFER = """
mutation($from: ID!, $to: ID!, $amount: Money!, $ts: Timestamp, $key: String) {
  transfer(input: {sourceAccountId: $from, targetAccountId: $to, amount: $amount,
                   timestamp: $ts, idempotencyKey: $key}) {
    balance
    entry { accountId timestamp kind amount balanceAfter counterpartyId }
    sourceAccount { id outgoing createdAt }
    targetAccount { id outgoing createdAt }
    errors { code message field }
  }
}"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _open(gql: GraphQLClient, opened_at: int) -> None:
    for account, amount in (("alice", 1_000), ("bob", 1), ("full", MAX_MONEY)):
        body = await gql.ok(
            "mutation($id: ID!, $ts: Timestamp, $amount: Money!) { "
            "createAccount(input: {id: $id, timestamp: $ts}) { errors { code } } "
            "deposit(input: {accountId: $id, amount: $amount, timestamp: $ts}) "
            "{ errors { code } } }",
            {"id": account, "ts": opened_at, "amount": amount},
        )
        assert body["createAccount"]["errors"] == []


CASES: list[tuple[str, dict[str, Any]]] = [
    ("ok", {"from": "alice", "to": "bob", "amount": 300}),
    ("source not found", {"from": "nobody", "to": "bob", "amount": 1}),
    ("target not found", {"from": "alice", "to": "nobody", "amount": 1}),
    ("insufficient funds", {"from": "alice", "to": "bob", "amount": 5_000}),
    ("balance overflow", {"from": "alice", "to": "full", "amount": 1}),
    ("out of order", {"from": "alice", "to": "bob", "amount": 1, "ts": 1}),
]


@pytest.mark.parametrize(("case", "variables"), CASES, ids=[c[0] for c in CASES])
async def test_one_statement_answers_as_the_general_path(
    make_client: MakeClient, case: str, variables: dict[str, Any]
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    await _open(gql, _now_ms() - 60_000)
    # Without a key: one statement. With one: the general path, on the state the first left
    # (unchanged when it refused).
    fast = (await gql.ok(KEYED_TRANSFER, {**variables, "key": None}))["transfer"]
    general = (await gql.ok(KEYED_TRANSFER, {**variables, "key": f"key-{case}"}))["transfer"]
    if case == "ok":
        assert fast["errors"] == []
        assert fast["balance"] == 700
        assert fast["entry"]["kind"] == "TRANSFER_OUT"
        assert fast["entry"]["balanceAfter"] == 700
        assert fast["sourceAccount"]["outgoing"] == 300
        assert general["balance"] == 400  # the same transfer again, now keyed
        assert general["sourceAccount"]["outgoing"] == 600
    else:
        assert fast["errors"], fast
        assert fast == general


async def test_due_cashback_is_credited_before_the_one_statement_transfer(
    make_client: MakeClient,
) -> None:
    gql = await make_client(ClockMode.SYSTEM)
    start = _now_ms() - DAY_MS - 60_000
    await _open(gql, start)
    paid = await pay(gql, "alice", 500, start + 1_000)  # cashback 10, due a minute ago
    assert paid["errors"] == []
    body = await gql.ok(TRANSFER, {"from": "alice", "to": "bob", "amount": 100})
    assert body["transfer"]["errors"] == []
    assert body["transfer"]["balance"] == 1_000 - 500 + 10 - 100
    history = await gql.ok(HISTORY, {"id": "alice", "first": 10})
    kinds = [e["node"]["kind"] for e in history["account"]["transactions"]["edges"]]
    assert kinds == ["DEPOSIT", "PAYMENT", "CASHBACK", "TRANSFER_OUT"]
