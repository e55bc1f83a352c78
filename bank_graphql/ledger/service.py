"""The ledger service: every mutation is one PostgreSQL transaction that it opens and commits.

Flow of a write: lock the touched accounts in id order -> settle their due cashback ->
pure checks (each refusal raised before anything is appended) -> append entries -> flush.
A refusal raised after settlement still commits the cashback that was due by now: it is
owed whatever the outcome of the request that noticed it.
"""

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from bank_graphql.ledger.domain import checks
from bank_graphql.ledger.domain.models import (
    Account,
    BatchOutcome,
    Entry,
    EntryKind,
    Payment,
    TransferRequest,
    WriteOutcome,
)
from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode, Refused
from bank_graphql.ledger.domain.rules import (
    CASHBACK_DELAY_MS,
    MAX_MONEY,
    MAX_TIMESTAMP_MS,
    add_to_total,
    cashback_of,
)
from bank_graphql.ledger.storage import clock as clocks
from bank_graphql.ledger.storage import idempotency
from bank_graphql.ledger.storage.cashback import SweepLimits
from bank_graphql.ledger.storage.clock import ClockMode, advance_client_clock, read_now
from bank_graphql.ledger.storage.database import Conn, in_transaction, ping
from bank_graphql.ledger.storage.idempotency import KeyedRequest, keyed_request
from bank_graphql.ledger.storage.reads import Snapshot, open_snapshot
from bank_graphql.ledger.storage.transfers import (
    AppliedTransfer,
    Batch,
    BatchAborted,
    transfer_key,
    transfer_refusals,
)
from bank_graphql.ledger.storage.unit_of_work import LockedAccount, UnitOfWork

log = logging.getLogger(__name__)

_CLOSE_MERGED = """
UPDATE accounts
SET survivor_id = %(survivor)s,
    merged_into = CASE WHEN id = %(absorbed)s THEN %(survivor)s ELSE merged_into END,
    merged_at = CASE WHEN id = %(absorbed)s THEN %(ts)s ELSE merged_at END
WHERE survivor_id = %(absorbed)s
"""

_TRANSFER = "SELECT * FROM ledger_transfer(%s, %s, %s, %s, %s)"

_CREATE_ACCOUNT = """
INSERT INTO accounts (id, created_at, last_entry_at, survivor_id)
VALUES (%(id)s, %(ts)s, %(ts)s, %(id)s)
ON CONFLICT (id) DO NOTHING
RETURNING id, created_at, outgoing
"""

_INSERT_PAYMENT = """
INSERT INTO payments (id, account_id, ts, amount, cashback, cashback_due_at, settled)
VALUES (nextval('payment_numbers'), %(account)s, %(ts)s, %(amount)s, %(cashback)s,
        %(due_at)s, %(cashback)s = 0)
RETURNING id
"""


@dataclass(frozen=True, slots=True)
class WriteLimits:
    retries_max: int = 3
    """Attempts for a transaction that lost a lock (lock_timeout), serialization or
    deadlock race; after the last, the request answers DATABASE_BUSY."""
    retry_backoff_ms: int = 5
    batch_items_max: int = 1000


Work = Callable[[UnitOfWork, int], Awaitable[WriteOutcome]]
T = TypeVar("T")


class Ledger:
    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        clock: ClockMode,
        limits: WriteLimits | None = None,
        sweep_limits: SweepLimits | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self._limits = limits or WriteLimits()
        self.sweep_limits = sweep_limits or SweepLimits()

    # -- reads -------------------------------------------------------------------------

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """Does the database answer within `timeout_s`?"""
        return await ping(self.pool, timeout_s)

    def snapshot(self) -> AbstractAsyncContextManager[Snapshot]:
        """Settle everything due by now, then hold one read-only snapshot until exit."""
        return open_snapshot(self.pool, self.clock, self.sweep_limits)

    # -- mutations ---------------------------------------------------------------------

    async def create_account(
        self, account_id: str, timestamp: int | None, idempotency_key: str | None = None
    ) -> WriteOutcome:
        refusals = checks.account_id_refusals(account_id, "id") + checks.timestamp_refusals(
            timestamp
        )

        async def work(uow: UnitOfWork, now: int) -> WriteOutcome:
            ts = self._creation_time(timestamp, now)
            cursor = await uow.conn.execute(_CREATE_ACCOUNT, {"id": account_id, "ts": ts})
            row = await cursor.fetchone()
            if row is None:
                raise Refused.one(
                    RefusalCode.ACCOUNT_ALREADY_EXISTS,
                    f"account {account_id!r} already exists (ids are never reused)",
                    "id",
                )
            await self._advance_clock(uow.conn, ts)
            return WriteOutcome(accounts=(Account(*row),))

        return await self._write(
            work,
            refusals,
            keyed_request(idempotency_key, "createAccount", id=account_id, timestamp=timestamp),
        )

    async def deposit(
        self,
        account_id: str,
        amount: int,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        refusals = _one_account_refusals(account_id, amount, timestamp)

        async def work(uow: UnitOfWork, now: int) -> WriteOutcome:
            account, ts = await self._lock_one(uow, account_id, timestamp, now)
            checks.refuse_overflow(account, amount)
            uow.append(account, EntryKind.DEPOSIT, amount, ts)
            entries = await uow.flush()
            await self._advance_clock(uow.conn, ts)
            return WriteOutcome(
                balance=account.balance, entry=entries[-1], accounts=(account.as_account(),)
            )

        keyed = keyed_request(
            idempotency_key, "deposit", accountId=account_id, amount=amount, timestamp=timestamp
        )
        return await self._write(work, refusals, keyed)

    async def transfer(self, request: TransferRequest) -> WriteOutcome:
        refusals, keyed = transfer_refusals(request), transfer_key(request)
        if not refusals and keyed is None and self.clock is ClockMode.SYSTEM:
            fast = await self._transfer_in_one_statement(request)
            if fast is not None:
                return fast

        async def work(uow: UnitOfWork, now: int) -> WriteOutcome:
            await uow.lock([request.source_id, request.target_id])
            await self._settle_now(uow, now)
            applied = await self._apply_transfer(uow, request, now)
            entries = await uow.flush()
            await self._advance_clock(uow.conn, applied.ts)
            return applied.outcome(entries)

        return await self._write(work, refusals, keyed)

    async def _transfer_in_one_statement(self, request: TransferRequest) -> WriteOutcome | None:
        """The transfer as one statement (schema.sql's ledger_transfer): one round trip.

        None when cashback must be credited first: the general path does that. A lost
        connection is not retried here: without an idempotency key nobody can tell whether
        the statement committed, so the client hears DATABASE_UNAVAILABLE.
        """
        now = clocks.wall_clock_ms()
        try:
            self._refuse_future(request.timestamp, now)
        except Refused as refused:
            return WriteOutcome(refusals=refused.refusals)

        async def attempt(conn: Conn) -> tuple[Any, ...]:
            cursor = await conn.execute(
                _TRANSFER,
                (request.source_id, request.target_id, request.amount, request.timestamp, now),
            )
            row = await cursor.fetchone()
            assert row is not None
            return row

        row = await self._in_transaction(attempt, autocommit_statement=True)
        outcome, entry_id, ts, balance, newest, src_created, src_out, tgt_created, tgt_out = row
        if outcome == "SETTLE_FIRST":
            return None
        refusal = {
            "SOURCE_NOT_FOUND": lambda: checks.not_found(request.source_id, "sourceAccountId"),
            "TARGET_NOT_FOUND": lambda: checks.not_found(request.target_id, "targetAccountId"),
            "TIMESTAMP_OUT_OF_ORDER": lambda: checks.out_of_order(request.timestamp or 0, newest),
            "INSUFFICIENT_FUNDS": lambda: checks.insufficient_funds(
                request.source_id, request.amount, balance
            ),
            "BALANCE_OVERFLOW": lambda: checks.overflow(request.target_id),
        }.get(outcome)
        if refusal is not None:
            return WriteOutcome(refusals=(refusal(),))
        assert outcome == "OK", outcome
        entry = Entry(
            entry_id,
            request.source_id,
            ts,
            EntryKind.TRANSFER_OUT,
            request.amount,
            balance,
            request.target_id,
            None,
        )
        return WriteOutcome(
            balance=balance,
            entry=entry,
            accounts=(
                Account(request.source_id, src_created, src_out),
                Account(request.target_id, tgt_created, tgt_out),
            ),
        )

    async def transfer_batch(
        self, requests: Sequence[TransferRequest], *, atomic: bool
    ) -> BatchOutcome:
        """Many transfers in one transaction, locking every account they touch once.

        Items are applied in order. Not atomic: each item commits or is refused on its own,
        a refused item changing nothing. Atomic: all commit, or none does and nothing is
        stored under the items' keys (a retry runs the batch again).
        """
        if len(requests) > self._limits.batch_items_max:
            return BatchOutcome(
                results=(),
                refusals=(
                    Refusal(
                        RefusalCode.BATCH_TOO_LARGE,
                        f"a batch holds at most {self._limits.batch_items_max} transfers",
                        ("transfers",),
                    ),
                ),
            )
        batch = Batch(requests)
        first_refused = batch.first_refused()
        if atomic and first_refused is not None:
            return batch.aborted(*first_refused)
        try:
            return await self._in_transaction(lambda conn: self._run_batch(conn, batch, atomic))
        except BatchAborted as aborted:
            return batch.aborted(aborted.index, aborted.refusals)

    async def _run_batch(self, conn: Conn, batch: Batch, atomic: bool) -> BatchOutcome:
        results = [batch.refused_before_running(i) for i in range(len(batch.requests))]
        keyed = {
            i: key
            for i, key in enumerate(batch.keys)
            if isinstance(key, KeyedRequest) and batch.first_use[i] == i
        }
        claims = await idempotency.claim(conn, list(keyed.values())) if keyed else {}
        for index, key in keyed.items():
            replay = idempotency.replayed(claims[key.key])
            if replay is not None:
                if atomic and replay.refusals:
                    # A replayed refusal is a refusal: the atomic batch stops at it.
                    raise BatchAborted(index, replay.refusals)
                results[index] = replay
            elif batch.input_refusals[index]:
                results[index] = WriteOutcome(refusals=tuple(batch.input_refusals[index]))
        to_apply = [
            i for i, result in enumerate(results) if result is None and batch.first_use[i] == i
        ]
        uow = UnitOfWork(conn)
        now = await read_now(conn, self.clock)
        await uow.lock(
            a for i in to_apply for a in (batch.requests[i].source_id, batch.requests[i].target_id)
        )
        await self._settle_now(uow, now)
        applied: dict[int, AppliedTransfer] = {}
        for index in to_apply:
            checkpoint = uow.checkpoint()
            try:
                applied[index] = await self._apply_transfer(uow, batch.requests[index], now)
                if self.clock is ClockMode.CLIENT:  # later items see the clock it moved
                    now = max(now, applied[index].ts)
            except Refused as refused:
                if atomic:
                    raise BatchAborted(index, refused.refusals) from None
                uow.restore(checkpoint)
                results[index] = WriteOutcome(refusals=refused.refusals)
        entries = await uow.flush()
        for index, transfer in applied.items():
            results[index] = transfer.outcome(entries)
        if applied:
            await self._advance_clock(conn, max(t.ts for t in applied.values()))
        await idempotency.store(
            conn,
            {
                key.key: outcome.to_json()
                for index, key in keyed.items()
                if claims[key.key] is None and (outcome := results[index]) is not None
            },
        )
        return batch.finish(results)

    async def _apply_transfer(
        self, uow: UnitOfWork, request: TransferRequest, now: int
    ) -> AppliedTransfer:
        """Check and append one transfer on accounts `uow` has locked and settled by now."""
        self._refuse_future(request.timestamp, now)
        source = uow.require(request.source_id, "sourceAccountId")
        target = uow.require(request.target_id, "targetAccountId")
        ts = await self._timestamp(uow, [source, target], request.timestamp, now)
        checks.refuse_insufficient(source, request.amount)
        checks.refuse_overflow(target, request.amount)
        position = uow.append(
            source, EntryKind.TRANSFER_OUT, request.amount, ts, counterparty_id=target.id
        )
        uow.append(target, EntryKind.TRANSFER_IN, request.amount, ts, counterparty_id=source.id)
        return AppliedTransfer(
            ts, position, source.balance, source.as_account(), target.as_account()
        )

    async def pay(
        self,
        account_id: str,
        amount: int,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        refusals = _one_account_refusals(account_id, amount, timestamp)

        async def work(uow: UnitOfWork, now: int) -> WriteOutcome:
            account, ts = await self._lock_one(uow, account_id, timestamp, now)
            due_at = ts + CASHBACK_DELAY_MS
            if due_at > MAX_TIMESTAMP_MS:
                raise Refused.one(
                    RefusalCode.INVALID_TIMESTAMP,
                    "the cashback of a payment at this timestamp would fall due past the end "
                    "of representable time",
                    "timestamp",
                )
            checks.refuse_insufficient(account, amount)
            cashback = cashback_of(amount)
            await self._advance_clock(uow.conn, ts)  # its lock wait may retry: before numbering
            cursor = await uow.conn.execute(
                _INSERT_PAYMENT,
                {
                    "account": account_id,
                    "ts": ts,
                    "amount": amount,
                    "cashback": cashback,
                    "due_at": due_at,
                },
            )
            row = await cursor.fetchone()
            assert row is not None
            number = int(row[0])
            uow.append(account, EntryKind.PAYMENT, amount, ts, payment_id=number)
            if cashback > 0:
                account.pending_cashback += cashback
                if account.next_cashback_due_at is None or due_at < account.next_cashback_due_at:
                    account.next_cashback_due_at = due_at
            await uow.flush()
            payment = Payment(number, account_id, ts, amount, cashback, due_at)
            return WriteOutcome(
                balance=account.balance, payment=payment, accounts=(account.as_account(),)
            )

        keyed = keyed_request(
            idempotency_key, "pay", accountId=account_id, amount=amount, timestamp=timestamp
        )
        return await self._write(work, refusals, keyed)

    async def merge_accounts(
        self,
        survivor_id: str,
        absorbed_id: str,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        """Move the absorbed account's whole balance into the survivor and close it.

        The absorbed account's payments, pending cashback and outgoing total go to the
        survivor, and so does everything it had absorbed before (merge chains).
        """
        refusals = (
            checks.account_id_refusals(survivor_id, "accountId")
            + checks.account_id_refusals(absorbed_id, "absorbedAccountId")
            + checks.timestamp_refusals(timestamp)
        )
        if not refusals and survivor_id == absorbed_id:
            refusals.append(
                Refusal(
                    RefusalCode.SAME_ACCOUNT,
                    "an account cannot absorb itself",
                    ("absorbedAccountId",),
                )
            )

        async def work(uow: UnitOfWork, now: int) -> WriteOutcome:
            self._refuse_future(timestamp, now)
            await uow.lock([survivor_id, absorbed_id])
            survivor = uow.require(survivor_id, "accountId")
            absorbed = uow.require(absorbed_id, "absorbedAccountId")
            ts = await self._settle_and_order(uow, timestamp, now)
            if absorbed.balance + absorbed.pending_cashback > MAX_MONEY - (
                survivor.balance + survivor.pending_cashback
            ):
                raise Refused.one(
                    RefusalCode.BALANCE_OVERFLOW,
                    f"account {survivor_id!r} would hold more than {MAX_MONEY} minor units "
                    "(pending cashback included)",
                    "absorbedAccountId",
                )
            moved = absorbed.balance
            uow.append(absorbed, EntryKind.MERGE_OUT, moved, ts, counterparty_id=survivor_id)
            uow.append(survivor, EntryKind.MERGE_IN, moved, ts, counterparty_id=absorbed_id)
            survivor.outgoing = add_to_total(survivor.outgoing, absorbed.outgoing)
            survivor.pending_cashback += absorbed.pending_cashback
            absorbed.pending_cashback = 0
            survivor.next_cashback_due_at = _earliest(
                survivor.next_cashback_due_at, absorbed.next_cashback_due_at
            )
            absorbed.next_cashback_due_at = None
            await uow.flush()
            await uow.conn.execute(
                _CLOSE_MERGED, {"survivor": survivor_id, "absorbed": absorbed_id, "ts": ts}
            )
            await self._advance_clock(uow.conn, ts)
            return WriteOutcome(balance=survivor.balance, accounts=(survivor.as_account(),))

        keyed = keyed_request(
            idempotency_key,
            "mergeAccounts",
            accountId=survivor_id,
            absorbedAccountId=absorbed_id,
            timestamp=timestamp,
        )
        return await self._write(work, refusals, keyed)

    # -- shared steps ------------------------------------------------------------------

    async def _write(
        self,
        work: Work,
        input_refusals: list[Refusal],
        keyed: KeyedRequest | Refusal | None,
    ) -> WriteOutcome:
        """Run `work` in one transaction, under the request's idempotency key if any.

        Input refusals found before any I/O skip the work (but are stored under the
        request's idempotency key, like any outcome). An invalid key stores nothing.
        """
        if isinstance(keyed, Refusal):
            return WriteOutcome(refusals=(*input_refusals, keyed))
        if input_refusals and keyed is None:
            return WriteOutcome(refusals=tuple(input_refusals))

        async def attempt(conn: Conn) -> WriteOutcome:
            if keyed is not None:
                claimed = (await idempotency.claim(conn, [keyed]))[keyed.key]
                replay = idempotency.replayed(claimed)
                if replay is not None:
                    return replay
            outcome = await self._run(conn, work, input_refusals)
            if keyed is not None:
                await idempotency.store(conn, {keyed.key: outcome.to_json()})
            return outcome

        return await self._in_transaction(attempt)

    async def _in_transaction(
        self, attempt: Callable[[Conn], Awaitable[T]], *, autocommit_statement: bool = False
    ) -> T:
        return await in_transaction(
            self.pool,
            attempt,
            races_max=self._limits.retries_max,
            backoff_ms=self._limits.retry_backoff_ms,
            autocommit_statement=autocommit_statement,
        )

    async def _run(self, conn: Conn, work: Work, input_refusals: list[Refusal]) -> WriteOutcome:
        if input_refusals:
            return WriteOutcome(refusals=tuple(input_refusals))
        uow = UnitOfWork(conn)
        now = await read_now(conn, self.clock)
        try:
            return await work(uow, now)
        except Refused as refused:
            return WriteOutcome(refusals=refused.refusals)

    def _creation_time(self, requested: int | None, now: int) -> int:
        self._refuse_future(requested, now)
        return now if requested is None else requested

    def _refuse_future(self, requested: int | None, now: int) -> None:
        if self.clock is ClockMode.SYSTEM and requested is not None and requested > now:
            raise Refused.one(
                RefusalCode.INVALID_TIMESTAMP,
                f"timestamp {requested} is later than the server's clock ({now})",
                "timestamp",
            )

    async def _lock_one(
        self, uow: UnitOfWork, account_id: str, requested: int | None, now: int
    ) -> tuple[LockedAccount, int]:
        """Lock and settle the one account a deposit or payment touches; its timestamp."""
        self._refuse_future(requested, now)
        await uow.lock([account_id])
        account = uow.require(account_id, "accountId")
        return account, await self._settle_and_order(uow, requested, now)

    async def _settle_and_order(self, uow: UnitOfWork, requested: int | None, now: int) -> int:
        """Settle the locked accounts' due cashback, then return the mutation's timestamp."""
        await self._settle_now(uow, now)
        return await self._timestamp(uow, list(uow.locked.values()), requested, now)

    async def _settle_now(self, uow: UnitOfWork, now: int) -> None:
        """Write the cashback of the locked accounts due by now. It is kept even if the
        mutation is then refused: it is owed whatever the request wanted."""
        await uow.settle_cashback(now)
        await uow.flush()

    async def _timestamp(
        self, uow: UnitOfWork, accounts: list[LockedAccount], requested: int | None, now: int
    ) -> int:
        """The mutation's timestamp on `accounts`, refused when out of order.

        When that timestamp is later than now (a client clock's `requested`, a newest entry
        ahead of now, or an earlier batch item's), cashback of `accounts` falling due up to
        it is credited first (written only if the mutation succeeds): a mutation never slips
        in before cashback due by its own timestamp.
        """
        newest = max(a.last_entry_at for a in accounts)
        stamp = max(now, newest) if requested is None else requested
        # Always asked: a batch's now may have moved past what was settled when it began;
        # accounts with nothing due by `stamp` cost no query.
        await uow.settle_cashback(stamp, only=[a.id for a in accounts])
        if requested is not None and requested < newest:
            raise Refused([checks.out_of_order(requested, newest)])
        return stamp

    async def _advance_clock(self, conn: Conn, ts: int) -> None:
        if self.clock is ClockMode.CLIENT:
            await advance_client_clock(conn, ts)


def _earliest(*times: int | None) -> int | None:
    return min((t for t in times if t is not None), default=None)


def _one_account_refusals(account_id: str, amount: int, timestamp: int | None) -> list[Refusal]:
    return (
        checks.account_id_refusals(account_id, "accountId")
        + checks.amount_refusals(amount)
        + checks.timestamp_refusals(timestamp)
    )
