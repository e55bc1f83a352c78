"""GraphQL documents the tests share, so each test reads as the behaviour it checks."""

from typing import Any

from tests.conftest import GraphQLClient

CREATE = """
mutation($id: ID!, $ts: Timestamp) {
  createAccount(input: {id: $id, timestamp: $ts}) {
    account { id createdAt }
    errors { code message field }
  }
}"""

DEPOSIT = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp) {
  deposit(input: {accountId: $id, amount: $amount, timestamp: $ts}) {
    balance
    entry { id accountId timestamp kind amount balanceAfter counterpartyId paymentId }
    account { id }
    errors { code message field }
  }
}"""

TRANSFER = """
mutation($from: ID!, $to: ID!, $amount: Money!, $ts: Timestamp) {
  transfer(input: {sourceAccountId: $from, targetAccountId: $to, amount: $amount,
                   timestamp: $ts}) {
    balance
    entry { id accountId timestamp kind amount balanceAfter counterpartyId }
    sourceAccount { id }
    targetAccount { id }
    errors { code message field }
  }
}"""

PAY = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp) {
  pay(input: {accountId: $id, amount: $amount, timestamp: $ts}) {
    balance
    payment { id accountId timestamp amount cashback cashbackDueAt status }
    account { id }
    errors { code message field }
  }
}"""

BALANCE = """
query($id: ID!, $at: Timestamp) { account(id: $id) { balance(at: $at) outgoing } }"""

HISTORY = """
query($id: ID!, $first: Int, $after: String, $last: Int, $before: String,
      $from: Timestamp, $to: Timestamp) {
  account(id: $id) {
    transactions(first: $first, after: $after, last: $last, before: $before,
                 from: $from, to: $to) {
      edges { cursor node { id timestamp kind amount balanceAfter counterpartyId paymentId } }
      nodes { id }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}"""

DAY_MS = 86_400_000


async def create(gql: GraphQLClient, account_id: str, ts: int | None = None) -> dict[str, Any]:
    data = await gql.ok(CREATE, {"id": account_id, "ts": ts})
    payload: dict[str, Any] = data["createAccount"]
    return payload


async def deposit(
    gql: GraphQLClient, account_id: str, amount: int, ts: int | None = None
) -> dict[str, Any]:
    data = await gql.ok(DEPOSIT, {"id": account_id, "amount": amount, "ts": ts})
    payload: dict[str, Any] = data["deposit"]
    return payload


async def transfer(
    gql: GraphQLClient, source: str, target: str, amount: int, ts: int | None = None
) -> dict[str, Any]:
    data = await gql.ok(TRANSFER, {"from": source, "to": target, "amount": amount, "ts": ts})
    payload: dict[str, Any] = data["transfer"]
    return payload


async def pay(
    gql: GraphQLClient, account_id: str, amount: int, ts: int | None = None
) -> dict[str, Any]:
    data = await gql.ok(PAY, {"id": account_id, "amount": amount, "ts": ts})
    payload: dict[str, Any] = data["pay"]
    return payload


async def balance(gql: GraphQLClient, account_id: str, at: int | None = None) -> int | None:
    data = await gql.ok(BALANCE, {"id": account_id, "at": at})
    value: int | None = data["account"]["balance"]
    return value


async def funded(gql: GraphQLClient, account_id: str, amount: int, ts: int | None = 1_000) -> None:
    """Create `account_id` at `ts` and deposit `amount` into it at the same instant."""
    assert (await create(gql, account_id, ts))["errors"] == []
    if amount:
        assert (await deposit(gql, account_id, amount, ts))["errors"] == []
