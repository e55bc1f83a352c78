"""GraphQL documents and client helpers the tests share, so each test reads as the behaviour
it checks.

CREATE, DEPOSIT and TRANSFER also take an optional idempotency `$key`."""

from dataclasses import dataclass
from typing import Any

from tests.conftest import GraphQLClient

CREATE = """
mutation($id: ID!, $ts: Timestamp, $key: String) {
  createAccount(input: {id: $id, timestamp: $ts, idempotencyKey: $key}) {
    account { id createdAt }
    errors { code message field }
  }
}"""

DEPOSIT = """
mutation($id: ID!, $amount: Money!, $ts: Timestamp, $key: String) {
  deposit(input: {accountId: $id, amount: $amount, timestamp: $ts, idempotencyKey: $key}) {
    balance
    entry { id accountId timestamp kind amount balanceAfter counterpartyId paymentId }
    account { id }
    errors { code message field }
  }
}"""

TRANSFER = """
mutation($from: ID!, $to: ID!, $amount: Money!, $ts: Timestamp, $key: String) {
  transfer(input: {sourceAccountId: $from, targetAccountId: $to, amount: $amount,
                   timestamp: $ts, idempotencyKey: $key}) {
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

MERGE = """
mutation($a: ID!, $b: ID!, $ts: Timestamp, $key: String) {
  mergeAccounts(input: {accountId: $a, absorbedAccountId: $b, timestamp: $ts,
                        idempotencyKey: $key}) {
    balance
    account { id createdAt outgoing }
    errors { code message field }
  }
}"""

BALANCE = """
query($id: ID!, $at: Timestamp) { account(id: $id) { balance(at: $at) outgoing } }"""

ACCOUNT = """
query($id: ID!) { account(id: $id) { id balance outgoing } }"""

BALANCES = "query { accounts(first: 100) { nodes { id balance } } }"

TOP_SPENDERS = """
query($first: Int!) { topSpenders(first: $first) { accountId outgoing } }"""

PAYMENT = """
query($account: ID!, $id: ID!, $at: Timestamp) {
  payment(accountId: $account, id: $id) {
    id accountId timestamp amount cashback cashbackDueAt status(at: $at)
  }
}"""

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
MAX_MONEY = 2**53 - 1


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


async def merge_payload(
    gql: GraphQLClient,
    survivor: str,
    absorbed: str,
    ts: int | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    data = await gql.ok(MERGE, {"a": survivor, "b": absorbed, "ts": ts, "key": key})
    payload: dict[str, Any] = data["mergeAccounts"]
    return payload


async def merge(
    gql: GraphQLClient,
    survivor: str,
    absorbed: str,
    ts: int | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """A merge that must succeed."""
    payload = await merge_payload(gql, survivor, absorbed, ts, key)
    assert payload["errors"] == [], payload["errors"]
    return payload


async def account(gql: GraphQLClient, account_id: str) -> dict[str, Any] | None:
    data = await gql.ok(ACCOUNT, {"id": account_id})
    value: dict[str, Any] | None = data["account"]
    return value


async def payment(
    gql: GraphQLClient, account_id: str, payment_id: str, at: int | None = None
) -> dict[str, Any] | None:
    data = await gql.ok(PAYMENT, {"account": account_id, "id": payment_id, "at": at})
    value: dict[str, Any] | None = data["payment"]
    return value


async def status(
    gql: GraphQLClient, account_id: str, payment_id: str, at: int | None = None
) -> str:
    found = await payment(gql, account_id, payment_id, at)
    assert found is not None, (account_id, payment_id)
    value: str = found["status"]
    return value


# -- transfers a client means to make exactly once, retried under their keys ----------------


@dataclass(frozen=True)
class Intended:
    key: str
    source: str
    target: str
    amount: int

    def variables(self) -> dict[str, Any]:
        """TRANSFER's variables, under the transfer's idempotency key."""
        return {"from": self.source, "to": self.target, "amount": self.amount, "key": self.key}


def plan_transfers(
    accounts: list[str], count: int, key_prefix: str, amounts: int
) -> list[Intended]:
    """`count` small transfers around `accounts`, of 1 to `amounts` each, keyed
    `{key_prefix}-000`, `{key_prefix}-001`, ...: each succeeds whatever the order, given
    opening balances well above the amounts."""
    plan = []
    for i in range(count):
        source = i % len(accounts)
        target = (source + 1 + (i // len(accounts)) % (len(accounts) - 1)) % len(accounts)
        plan.append(
            Intended(f"{key_prefix}-{i:03d}", accounts[source], accounts[target], 1 + i % amounts)
        )
    return plan


def assert_answered_as_intended(
    plan: list[Intended], answers: dict[str, dict[str, Any]], summary: str
) -> None:
    """Every intended transfer answered success (`answers` by key), with a TRANSFER_OUT entry
    of its own source, target and amount."""
    assert set(answers) == {intended.key for intended in plan}, summary
    for intended in plan:
        answer = answers[intended.key]
        assert answer["errors"] == [], (intended, answer, summary)
        entry = answer["entry"]
        assert entry["kind"] == "TRANSFER_OUT", (intended, answer)
        assert entry["accountId"] == intended.source, (intended, answer)
        assert entry["counterpartyId"] == intended.target, (intended, answer)
        assert entry["amount"] == intended.amount, (intended, answer)


def balances_after(accounts: list[str], opening: int, plan: list[Intended]) -> dict[str, int]:
    """Every account's balance once each of `plan` happened exactly once."""
    balances = dict.fromkeys(accounts, opening)
    for intended in plan:
        balances[intended.source] -= intended.amount
        balances[intended.target] += intended.amount
    return balances


# -- batches --------------------------------------------------------------------------------

BATCH = """
mutation($transfers: [TransferInput!]!, $atomic: Boolean! = false) {
  transferBatch(input: {transfers: $transfers, atomic: $atomic}) {
    results {
      balance
      entry { id accountId timestamp kind amount balanceAfter counterpartyId }
      sourceAccount { id outgoing }
      targetAccount { id outgoing }
      errors { code message field }
    }
    errors { code message field }
  }
}"""


def batch_item(
    source: str, target: str, amount: int, ts: int | None = None, key: str | None = None
) -> dict[str, Any]:
    """One TransferInput of a batch; absent timestamp and key are left out."""
    item: dict[str, Any] = {"sourceAccountId": source, "targetAccountId": target, "amount": amount}
    if ts is not None:
        item["timestamp"] = ts
    if key is not None:
        item["idempotencyKey"] = key
    return item


async def batch(
    gql: GraphQLClient, items: list[dict[str, Any]], *, atomic: bool = False, document: str = BATCH
) -> dict[str, Any]:
    data = await gql.ok(document, {"transfers": items, "atomic": atomic})
    payload: dict[str, Any] = data["transferBatch"]
    return payload


def item_codes(payload: dict[str, Any]) -> list[str]:
    """Each batch item's outcome: "OK", or the codes of its errors joined by "+"."""
    return [
        "+".join(e["code"] for e in result["errors"]) if result["errors"] else "OK"
        for result in payload["results"]
    ]
