"""The write operations the load sends: their GraphQL documents, inputs and answers.

`transfer` and `keyed-transfer` pick two accounts (`--batch K` > 1 sends them as one
`transferBatch`); `deposit` and `pay` touch one account. In mode `hot` every operation
touches account ids[0]: a transfer as source or target with equal odds, a deposit or a
payment always.
"""

import hashlib
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

OPERATIONS = ("transfer", "keyed-transfer", "deposit", "pay")
TRANSFERS = ("transfer", "keyed-transfer")
# The ledger entry each operation writes once, to count committed operations in the books.
ENTRY_KIND = {
    "transfer": "TRANSFER_OUT",
    "keyed-transfer": "TRANSFER_OUT",
    "deposit": "DEPOSIT",
    "pay": "PAYMENT",
}

TRANSFER = (
    "mutation Transfer($input: TransferInput!) {"
    " transfer(input: $input) { balance errors { code } } }"
)
# The batch input type has no agreed name yet: build the input object inline so the
# document does not depend on it.
TRANSFER_BATCH = (
    "mutation TransferBatch($transfers: [TransferInput!]!, $atomic: Boolean!) {"
    " transferBatch(input: {transfers: $transfers, atomic: $atomic})"
    " { results { balance errors { code } } errors { code } } }"
)
DEPOSIT = (
    "mutation Deposit($accountId: ID!, $amount: Money!) {"
    " deposit(input: {accountId: $accountId, amount: $amount}) { balance errors { code } } }"
)
PAY = (
    "mutation Pay($accountId: ID!, $amount: Money!) {"
    " pay(input: {accountId: $accountId, amount: $amount}) { balance errors { code } } }"
)
_SINGLE_ACCOUNT = {"deposit": DEPOSIT, "pay": PAY}


def applies(operation: str, batch: int) -> bool:
    """Batches exist for transfers only: a deposit or payment cell runs with batch 1."""
    return batch == 1 or operation in TRANSFERS


def pick_pair(rng: random.Random, ids: tuple[str, ...], mode: str) -> tuple[str, str]:
    """Source and target: uniform over distinct pairs, or one side always the hot ids[0]."""
    if mode == "hot":
        other = ids[rng.randrange(1, len(ids))]
        return (ids[0], other) if rng.random() < 0.5 else (other, ids[0])
    source = rng.randrange(len(ids))
    target = rng.randrange(len(ids) - 1)
    if target >= source:
        target += 1
    return ids[source], ids[target]


def pick_account(rng: random.Random, ids: tuple[str, ...], mode: str) -> str:
    return ids[0] if mode == "hot" else ids[rng.randrange(len(ids))]


@dataclass(frozen=True, slots=True)
class Request:
    body: bytes
    amounts: tuple[int, ...]  # of each item, in order, to add up the money that moved


@dataclass
class RequestMaker:
    """One client's requests: random inputs and, for keyed transfers, never-reused keys."""

    operation: str
    mode: str
    account_ids: tuple[str, ...]
    amount_max: int
    batch: int
    atomic: bool
    by_id: bool
    rng: random.Random
    key_prefix: str
    _serials: Iterator[int] = field(default_factory=itertools.count)

    def _transfer_input(self) -> dict[str, Any]:
        source, target = pick_pair(self.rng, self.account_ids, self.mode)
        item: dict[str, Any] = {
            "sourceAccountId": source,
            "targetAccountId": target,
            "amount": self.rng.randint(1, self.amount_max),
        }
        if self.operation == "keyed-transfer":
            item["idempotencyKey"] = f"{self.key_prefix}-{next(self._serials)}"
        return item

    def _document(self, text: str) -> dict[str, str]:
        """The request's document: its text, or its id (the server's own documents)."""
        if self.by_id:
            return {"documentId": "sha256:" + hashlib.sha256(text.encode()).hexdigest()}
        return {"query": text}

    def next(self) -> Request:
        if self.operation in _SINGLE_ACCOUNT:
            account = pick_account(self.rng, self.account_ids, self.mode)
            amount = self.rng.randint(1, self.amount_max)
            variables: dict[str, Any] = {"accountId": account, "amount": amount}
            body = {**self._document(_SINGLE_ACCOUNT[self.operation]), "variables": variables}
            return Request(orjson.dumps(body), (amount,))
        if self.batch == 1:
            item = self._transfer_input()
            body = {**self._document(TRANSFER), "variables": {"input": item}}
            return Request(orjson.dumps(body), (item["amount"],))
        items = [self._transfer_input() for _ in range(self.batch)]
        variables = {"transfers": items, "atomic": self.atomic}
        body = {**self._document(TRANSFER_BATCH), "variables": variables}
        return Request(orjson.dumps(body), tuple(i["amount"] for i in items))


def answers(
    operation: str, batch: int, data: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The payload, one result per item, and the refusals of a batch as a whole."""
    if operation in _SINGLE_ACCOUNT or batch == 1:
        name = "transfer" if operation in TRANSFERS else operation
        payload = data.get(name) or {}
        return payload, [payload], []
    payload = data.get("transferBatch") or {}
    return payload, payload.get("results") or [], payload.get("errors") or []


def money_in(operation: str, committed_amount: int) -> int:
    """What the committed operations added to the sum of all balances."""
    if operation == "deposit":
        return committed_amount
    if operation == "pay":
        return -committed_amount
    return 0
