"""A batch of transfers as the client sent it: the shape of each item, its key, and which
items the database must see. A single transfer is a batch of one.

A key repeated within the batch takes the outcome of its first use (or
IDEMPOTENCY_KEY_REUSED when its input differs); only first uses reach the database.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from bank_graphql.ledger.domain import checks
from bank_graphql.ledger.domain.keys import KeyedRequest, keyed_request, reuse_refusal
from bank_graphql.ledger.domain.models import BatchOutcome, TransferRequest, WriteOutcome
from bank_graphql.ledger.domain.outcomes import worded
from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode


def transfer_refusals(request: TransferRequest) -> list[Refusal]:
    refusals = (
        checks.account_id_refusals(request.source_id, "sourceAccountId")
        + checks.account_id_refusals(request.target_id, "targetAccountId")
        + checks.amount_refusals(request.amount)
        + checks.timestamp_refusals(request.timestamp)
    )
    if not refusals and request.source_id == request.target_id:
        refusals.append(
            checks.same_account("targetAccountId", "source and target must be different accounts")
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
class SentItem:
    """An item the database sees: its index in the batch, and the outcome its input alone
    decided (to store under its key), if any."""

    index: int
    request: TransferRequest
    key: KeyedRequest | None
    refused: tuple[Refusal, ...]


class Batch:
    def __init__(self, requests: Sequence[TransferRequest], sees: Callable[[str], bool]) -> None:
        """`sees`: whether an account exists for the credential (a transfer out of one
        that does not is refused as out of an account never created)."""
        self.requests = list(requests)
        self.sees = sees
        self.input_refusals = [
            transfer_refusals(r) or checks.scope_refusals(sees, (r.source_id, "sourceAccountId"))
            for r in self.requests
        ]
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
                    refused = WriteOutcome(refusals=(reuse_refusal(key),))
            if refused is not None:
                return index, refused.refusals
        return None

    def to_send(self) -> list[SentItem]:
        """The items the database must see: first uses not refused before running."""
        return [
            SentItem(
                index,
                request,
                key if isinstance(key, KeyedRequest) else None,
                tuple(self.input_refusals[index]),
            )
            for index, (request, key) in enumerate(zip(self.requests, self.keys, strict=True))
            if self.first_use[index] == index and self.refused_before_running(index) is None
        ]

    def finish(self, sent: dict[int, WriteOutcome]) -> BatchOutcome:
        """Every item's outcome: from the database, refused before running, or its key's
        first use."""
        final = []
        for index in range(len(self.requests)):
            first = self.first_use[index]
            result = sent.get(first) or self.refused_before_running(first)
            if first != index:
                key, first_key = self.keys[index], self.keys[first]
                assert isinstance(key, KeyedRequest)
                assert isinstance(first_key, KeyedRequest)
                if key.fingerprint != first_key.fingerprint:
                    result = WriteOutcome(refusals=(reuse_refusal(key),))
            assert result is not None, "every item has an outcome"
            final.append(self._as_seen(index, result))
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
                self._as_seen(i, WriteOutcome(refusals=refusals)) if i == index else not_applied
                for i in range(len(self.requests))
            )
        )

    def _as_seen(self, index: int, outcome: WriteOutcome) -> WriteOutcome:
        """The item's outcome as its caller may see it: a timestamp refusal does not tell
        the newest entry time of a target outside the caller's scope."""
        request = self.requests[index]
        if self.sees(request.target_id):
            return outcome
        hidden = worded(
            RefusalCode.TIMESTAMP_OUT_OF_ORDER, "timestamp", requested=request.timestamp
        )
        return replace(
            outcome,
            refusals=tuple(
                hidden if r.code is RefusalCode.TIMESTAMP_OUT_OF_ORDER else r
                for r in outcome.refusals
            ),
        )
