"""The ledger's face: every mutation is one SQL function called in one statement.

Here a mutation's inputs are checked for shape and its idempotency key fingerprinted; the
SQL function (bank_graphql/ledger/sql) locks, checks, credits due cashback, appends and
stores the outcome under the key, and answers with an outcome document.
"""

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bank_graphql.ledger.domain import checks
from bank_graphql.ledger.domain.access import Principal
from bank_graphql.ledger.domain.batch import Batch, SentItem
from bank_graphql.ledger.domain.clock import ClockMode
from bank_graphql.ledger.domain.keys import KeyedRequest, keyed_request
from bank_graphql.ledger.domain.models import BatchOutcome, TransferRequest, WriteOutcome
from bank_graphql.ledger.domain.outcomes import outcome_doc, outcome_from_doc
from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode
from bank_graphql.ledger.storage import clock, writes
from bank_graphql.ledger.storage.cashback import SweepLimits
from bank_graphql.ledger.storage.database import Conn, ping
from bank_graphql.ledger.storage.live import LiveFeed
from bank_graphql.ledger.storage.reads import Snapshot
from bank_graphql.ledger.storage.replica import Replica
from bank_graphql.ledger.storage.snapshots import settle_due_then_snapshot
from bank_graphql.ledger.storage.writes import BatchAborted, RetryLimits, jsonb

_CREATE_ACCOUNT = "SELECT ledger_create_account(%s, %s, %s, %s, %s, %s)"
_DEPOSIT = "SELECT ledger_deposit(%s, %s, %s, %s, %s, %s, %s)"
_PAY = "SELECT ledger_pay(%s, %s, %s, %s, %s, %s, %s)"
_MERGE = "SELECT ledger_merge(%s, %s, %s, %s, %s, %s, %s)"
_TRANSFERS = """
SELECT ledger_transfers(%s, %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[],
                        %s::text[], %s::jsonb[], %s::boolean[], %s, %s)
"""
_TRANSFER = "SELECT ledger_transfer(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
_REFUSE = "SELECT ledger_refuse(%s, %s, %s, %s, %s)"


@dataclass(frozen=True, slots=True)
class WriteLimits:
    retries_max: int = 3
    """Attempts for a write that lost a lock (lock_timeout), serialization or deadlock
    race; after the last, the request answers DATABASE_BUSY."""
    retry_backoff_ms: int = 5
    batch_items_max: int = 1000


class Ledger:
    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        clock: ClockMode,
        limits: WriteLimits | None = None,
        sweep_limits: SweepLimits | None = None,
        live: LiveFeed | None = None,
        replica: Replica | None = None,
    ) -> None:
        self.pool = pool
        self.replica = replica
        """Where history reads go once it has caught up (storage/replica.py)."""
        self._live = live
        self.clock = clock
        self._limits = limits or WriteLimits()
        self._retry = RetryLimits(self._limits.retries_max, self._limits.retry_backoff_ms)
        self.sweep_limits = sweep_limits or SweepLimits()

    @property
    def live(self) -> LiveFeed:
        """The live feeds of this process (subscriptions)."""
        if self._live is None:
            raise RuntimeError("this ledger was made without live feeds")
        return self._live

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """Does the database answer within `timeout_s`?"""
        return await ping(self.pool, timeout_s)

    def settle_due_then_snapshot(
        self, principal: Principal, history: bool = False
    ) -> AbstractAsyncContextManager[Snapshot]:
        """Credit every cashback due by now (a write), then hold one read-only snapshot of
        what exists for `principal`. A read of `history` (pages of entries or payments, a
        balance or status at an instant) takes it on the replica, when there is one and it
        has caught up."""
        replica = self.replica if history else None
        return settle_due_then_snapshot(
            self.pool, self.clock, self.sweep_limits, principal, replica
        )

    async def create_account(
        self,
        principal: Principal,
        account_id: str,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        refusals = checks.account_id_refusals(account_id, "id") + checks.timestamp_refusals(
            timestamp
        )
        keyed = keyed_request(idempotency_key, "createAccount", id=account_id, timestamp=timestamp)
        return await self._write(
            principal, _CREATE_ACCOUNT, (account_id, timestamp), refusals, keyed
        )

    async def deposit(
        self,
        principal: Principal,
        account_id: str,
        amount: int,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        refusals = _one_account_refusals(principal, account_id, amount, timestamp)
        keyed = keyed_request(
            idempotency_key, "deposit", accountId=account_id, amount=amount, timestamp=timestamp
        )
        arguments = (account_id, amount, timestamp)
        return await self._write(principal, _DEPOSIT, arguments, refusals, keyed)

    async def pay(
        self,
        principal: Principal,
        account_id: str,
        amount: int,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        refusals = _one_account_refusals(principal, account_id, amount, timestamp)
        keyed = keyed_request(
            idempotency_key, "pay", accountId=account_id, amount=amount, timestamp=timestamp
        )
        arguments = (account_id, amount, timestamp)
        return await self._write(principal, _PAY, arguments, refusals, keyed)

    async def merge_accounts(
        self,
        principal: Principal,
        survivor_id: str,
        absorbed_id: str,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        """Move the absorbed account's whole balance into the survivor and close it."""
        refusals = (
            checks.account_id_refusals(survivor_id, "accountId")
            + checks.account_id_refusals(absorbed_id, "absorbedAccountId")
            + checks.timestamp_refusals(timestamp)
        )
        if not refusals and survivor_id == absorbed_id:
            refusals.append(
                checks.same_account("absorbedAccountId", "an account cannot absorb itself")
            )
        refusals = refusals or checks.scope_refusals(
            principal.sees, (survivor_id, "accountId"), (absorbed_id, "absorbedAccountId")
        )
        keyed = keyed_request(
            idempotency_key,
            "mergeAccounts",
            accountId=survivor_id,
            absorbedAccountId=absorbed_id,
            timestamp=timestamp,
        )
        arguments = (survivor_id, absorbed_id, timestamp)
        return await self._write(principal, _MERGE, arguments, refusals, keyed)

    async def transfer(self, principal: Principal, request: TransferRequest) -> WriteOutcome:
        """One transfer: a batch of one (ledger_transfer in the SQL), its columns scalars."""
        batch = Batch([request], principal.sees)
        sent: dict[int, WriteOutcome] = {}
        for item in batch.to_send():
            key = (None, None) if item.key is None else (item.key.key, item.key.fingerprint)
            refused = jsonb(outcome_doc(item.refused)) if item.refused else None
            one = item.request
            row = (one.source_id, one.target_id, one.amount, one.timestamp)
            hidden = not principal.sees(one.target_id)  # ledger_transfer_one says why
            params = (principal.name, *row, clock.wall_or_client(self.clock), *key, refused, hidden)
            document = await writes.call(
                self.pool, self._retry, _TRANSFER, params, keyed=item.key is not None
            )
            sent[item.index] = outcome_from_doc(document)
        return batch.finish(sent).results[0]

    async def transfer_batch(
        self, principal: Principal, requests: Sequence[TransferRequest], *, atomic: bool
    ) -> BatchOutcome:
        """Transfers in order, in one transaction (ledger_transfers in the SQL)."""
        if len(requests) > self._limits.batch_items_max:
            too_large = Refusal(
                RefusalCode.BATCH_TOO_LARGE,
                f"a batch holds at most {self._limits.batch_items_max} transfers",
                ("transfers",),
            )
            return BatchOutcome(results=(), refusals=(too_large,))
        batch = Batch(requests, principal.sees)
        first_refused = batch.first_refused()
        if atomic and first_refused is not None:
            return batch.aborted(*first_refused)
        items = batch.to_send()
        if not items:
            return batch.finish({})
        try:
            columns = _transfer_columns(items, principal, atomic)
            params = (principal.name, *columns, clock.wall_or_client(self.clock))
            documents = await writes.call(
                self.pool, self._retry, _TRANSFERS, params, keyed=any(i.key for i in items)
            )
        except BatchAborted as aborted:
            refused = outcome_from_doc(aborted.outcome).refusals
            return batch.aborted(items[aborted.index].index, refused)
        return batch.finish(
            {item.index: outcome_from_doc(doc) for item, doc in zip(items, documents, strict=True)}
        )

    async def _write(
        self,
        principal: Principal,
        statement: str,
        arguments: tuple[Any, ...],
        input_refusals: list[Refusal],
        keyed: KeyedRequest | Refusal | None,
    ) -> WriteOutcome:
        """Input refused before any I/O is answered at once, or stored under the request's
        key when it has one. An invalid key stores nothing."""
        if isinstance(keyed, Refusal):
            return WriteOutcome(refusals=(*input_refusals, keyed))
        if input_refusals and keyed is None:
            return WriteOutcome(refusals=tuple(input_refusals))
        if input_refusals:
            assert keyed is not None
            document = outcome_doc(tuple(input_refusals))
            params: tuple[Any, ...] = (
                principal.name,
                keyed.operation,
                keyed.key,
                keyed.fingerprint,
            )
            return outcome_from_doc(
                await writes.call(
                    self.pool, self._retry, _REFUSE, (*params, jsonb(document)), keyed=True
                )
            )
        key = (None, None) if keyed is None else (keyed.key, keyed.fingerprint)
        params = (principal.name, *arguments, clock.wall_or_client(self.clock), *key)
        return outcome_from_doc(
            await writes.call(self.pool, self._retry, statement, params, keyed=keyed is not None)
        )


def _transfer_columns(items: list[SentItem], principal: Principal, atomic: bool) -> tuple[Any, ...]:
    return (
        [i.request.source_id for i in items],
        [i.request.target_id for i in items],
        [i.request.amount for i in items],
        [i.request.timestamp for i in items],
        [None if i.key is None else i.key.key for i in items],
        [None if i.key is None else i.key.fingerprint for i in items],
        [jsonb(outcome_doc(i.refused)) if i.refused else None for i in items],
        [not principal.sees(i.request.target_id) for i in items],
        atomic,
    )


def _one_account_refusals(
    principal: Principal, account_id: str, amount: int, timestamp: int | None
) -> list[Refusal]:
    refusals = (
        checks.account_id_refusals(account_id, "accountId")
        + checks.amount_refusals(amount)
        + checks.timestamp_refusals(timestamp)
    )
    return refusals or checks.scope_refusals(principal.sees, (account_id, "accountId"))
