"""Transfers one at a time or in batches: the checks of a request and the bookkeeping of
a batch's items. The transaction around them is the service's."""

from collections.abc import Sequence
from dataclasses import dataclass

from bank_graphql.ledger.domain import checks
from bank_graphql.ledger.domain.models import (
    Account,
    BatchOutcome,
    Entry,
    TransferRequest,
    WriteOutcome,
)
from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode
from bank_graphql.ledger.storage import idempotency
from bank_graphql.ledger.storage.idempotency import KeyedRequest, keyed_request


def transfer_refusals(request: TransferRequest) -> list[Refusal]:
    refusals = (
        checks.account_id_refusals(request.source_id, "sourceAccountId")
        + checks.account_id_refusals(request.target_id, "targetAccountId")
        + checks.amount_refusals(request.amount)
        + checks.timestamp_refusals(request.timestamp)
    )
    if not refusals and request.source_id == request.target_id:
        refusals.append(
            Refusal(
                RefusalCode.SAME_ACCOUNT,
                "source and target must be different accounts",
                ("targetAccountId",),
            )
        )
    return refusals


def transfer_key(request: TransferRequest) -> KeyedRequest | Refusal | None:
    return keyed_request(
        request.idempotency_key,
        "transfer",
        sourceAccountId=request.source_id,
        targetAccountId=request.target_id,
        amount=request.amount,
        timestamp=request.timestamp,
    )


@dataclass(frozen=True, slots=True)
class AppliedTransfer:
    ts: int
    position: int
    """Where its TRANSFER_OUT entry stands among the entries the next flush writes."""
    balance: int
    source: Account
    target: Account

    def outcome(self, flushed: list[Entry]) -> WriteOutcome:
        return WriteOutcome(
            balance=self.balance, entry=flushed[self.position], accounts=(self.source, self.target)
        )


class BatchAborted(Exception):
    def __init__(self, index: int, refusals: tuple[Refusal, ...]) -> None:
        super().__init__(f"batch item {index} refused")
        self.index = index
        self.refusals = refusals


class Batch:
    """The items of a transfer batch, checked and keyed before the transaction.

    A repeated key within the batch takes the outcome of its first use (or
    IDEMPOTENCY_KEY_REUSED when its input differs).
    """

    def __init__(self, requests: Sequence[TransferRequest]) -> None:
        self.requests = list(requests)
        self.input_refusals = [transfer_refusals(r) for r in self.requests]
        self.keys = [transfer_key(r) for r in self.requests]
        first_index: dict[str, int] = {}
        self.first_use = [
            first_index.setdefault(key.key, i) if isinstance(key, KeyedRequest) else i
            for i, key in enumerate(self.keys)
        ]

    def refused_before_running(self, index: int) -> WriteOutcome | None:
        """The outcome of an item refused on its input alone, stored under no key."""
        key, refusals = self.keys[index], self.input_refusals[index]
        if isinstance(key, Refusal):
            return WriteOutcome(refusals=(*refusals, key))
        if key is None and refusals:
            return WriteOutcome(refusals=tuple(refusals))
        return None

    def first_refused(self) -> tuple[int, tuple[Refusal, ...]] | None:
        """The first item refused whatever the ledger holds: bad input, a bad key, or a key
        repeated within the batch for another input."""
        for index, key in enumerate(self.keys):
            refused = self.refused_before_running(index)
            if refused is None and self.input_refusals[index]:
                refused = WriteOutcome(refusals=tuple(self.input_refusals[index]))
            if refused is None and isinstance(key, KeyedRequest):
                first_key = self.keys[self.first_use[index]]
                assert isinstance(first_key, KeyedRequest)
                if first_key.fingerprint != key.fingerprint:
                    refused = _reused(key)
            if refused is not None:
                return index, refused.refusals
        return None

    def finish(self, results: list[WriteOutcome | None]) -> BatchOutcome:
        """Give repeats of a key their first use's outcome; every item has one then."""
        final = []
        for index, result in enumerate(results):
            first = self.first_use[index]
            if first != index:
                key, first_key = self.keys[index], self.keys[first]
                assert isinstance(key, KeyedRequest)
                assert isinstance(first_key, KeyedRequest)
                same = key.fingerprint == first_key.fingerprint
                result = results[first] if same else _reused(key)
            assert result is not None, "every item has an outcome"
            final.append(result)
        return BatchOutcome(results=tuple(final))

    def aborted(self, index: int, refusals: tuple[Refusal, ...]) -> BatchOutcome:
        not_applied = WriteOutcome(
            refusals=(
                Refusal(
                    RefusalCode.BATCH_ABORTED,
                    f"not applied: item {index} of this atomic batch was refused",
                ),
            )
        )
        return BatchOutcome(
            results=tuple(
                WriteOutcome(refusals=refusals) if i == index else not_applied
                for i in range(len(self.requests))
            )
        )


def _reused(key: KeyedRequest) -> WriteOutcome:
    return WriteOutcome(refusals=(idempotency.reuse_refusal(key),))
