"""The ledger service: every mutation is one PostgreSQL transaction that it opens and commits.

Flow of a write: lock the touched accounts in id order -> settle their due cashback ->
pure checks (each refusal raised before anything is appended) -> append entries -> flush.
A refusal raised after settlement still commits the cashback that was due by now: it is
owed whatever the outcome of the request that noticed it.
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg import errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bank_graphql.ledger import idempotency
from bank_graphql.ledger.cashback import SweepLimits, any_due, settle_due
from bank_graphql.ledger.clock import ClockMode, advance_client_clock, read_now
from bank_graphql.ledger.database import Conn
from bank_graphql.ledger.idempotency import KeyedRequest
from bank_graphql.ledger.models import Account, EntryKind, Payment, WriteOutcome
from bank_graphql.ledger.reads import Snapshot
from bank_graphql.ledger.refusals import Refusal, RefusalCode, Refused
from bank_graphql.ledger.rules import (
    CASHBACK_DELAY_MS,
    MAX_MONEY,
    MAX_TIMESTAMP_MS,
    cashback_of,
    is_account_id,
    is_idempotency_key,
)
from bank_graphql.ledger.unit_of_work import LockedAccount, UnitOfWork

log = logging.getLogger(__name__)

_TRANSIENT_ERRORS = (errors.SerializationFailure, errors.DeadlockDetected)

_CLOSE_MERGED = """
UPDATE accounts
SET survivor_id = %(survivor)s,
    merged_into = CASE WHEN id = %(absorbed)s THEN %(survivor)s ELSE merged_into END,
    merged_at = CASE WHEN id = %(absorbed)s THEN %(ts)s ELSE merged_at END
WHERE survivor_id = %(absorbed)s
"""

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
    retries_max: int = 5
    """Attempts for a transaction that lost a serialization or deadlock race."""
    retry_backoff_ms: int = 5


Work = Callable[[UnitOfWork, int], Awaitable[WriteOutcome]]


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
        try:
            async with asyncio.timeout(timeout_s), self.pool.connection(timeout_s) as conn:
                await conn.execute("SELECT 1")
        except (errors.Error, PoolTimeout, TimeoutError):
            return False
        return True

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """Settle everything due by now, then hold one read-only snapshot until exit."""
        async with self.pool.connection() as conn:
            now = await read_now(conn, self.clock)
            if await any_due(conn, now):
                await settle_due(conn, now, self.sweep_limits)
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield Snapshot(conn, now)
            finally:
                await conn.execute("ROLLBACK")

    # -- mutations ---------------------------------------------------------------------

    async def create_account(
        self, account_id: str, timestamp: int | None, idempotency_key: str | None = None
    ) -> WriteOutcome:
        refusals = _account_id_refusals(account_id, "id") + _timestamp_refusals(timestamp)

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
            _keyed(idempotency_key, "createAccount", id=account_id, timestamp=timestamp),
        )

    async def deposit(
        self,
        account_id: str,
        amount: int,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        refusals = (
            _account_id_refusals(account_id, "accountId")
            + _amount_refusals(amount)
            + _timestamp_refusals(timestamp)
        )

        async def work(uow: UnitOfWork, now: int) -> WriteOutcome:
            self._refuse_future(timestamp, now)
            await uow.lock([account_id])
            account = uow.require(account_id, "accountId")
            ts = await self._settle_and_order(uow, timestamp, now)
            _refuse_overflow(account, amount)
            uow.append(account, EntryKind.DEPOSIT, amount, ts)
            entries = await uow.flush()
            await self._advance_clock(uow.conn, ts)
            return WriteOutcome(
                balance=account.balance, entry=entries[-1], accounts=(account.as_account(),)
            )

        keyed = _keyed(
            idempotency_key, "deposit", accountId=account_id, amount=amount, timestamp=timestamp
        )
        return await self._write(work, refusals, keyed)

    async def transfer(
        self,
        source_id: str,
        target_id: str,
        amount: int,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        refusals = (
            _account_id_refusals(source_id, "sourceAccountId")
            + _account_id_refusals(target_id, "targetAccountId")
            + _amount_refusals(amount)
            + _timestamp_refusals(timestamp)
        )
        if not refusals and source_id == target_id:
            refusals.append(
                Refusal(
                    RefusalCode.SAME_ACCOUNT,
                    "source and target must be different accounts",
                    ("targetAccountId",),
                )
            )

        async def work(uow: UnitOfWork, now: int) -> WriteOutcome:
            self._refuse_future(timestamp, now)
            await uow.lock([source_id, target_id])
            source = uow.require(source_id, "sourceAccountId")
            target = uow.require(target_id, "targetAccountId")
            ts = await self._settle_and_order(uow, timestamp, now)
            _refuse_insufficient(source, amount)
            _refuse_overflow(target, amount)
            uow.append(source, EntryKind.TRANSFER_OUT, amount, ts, counterparty_id=target_id)
            uow.append(target, EntryKind.TRANSFER_IN, amount, ts, counterparty_id=source_id)
            entries = await uow.flush()
            await self._advance_clock(uow.conn, ts)
            transfer_out = next(e for e in entries if e.kind is EntryKind.TRANSFER_OUT)
            return WriteOutcome(
                balance=source.balance,
                entry=transfer_out,
                accounts=(source.as_account(), target.as_account()),
            )

        keyed = _keyed(
            idempotency_key,
            "transfer",
            sourceAccountId=source_id,
            targetAccountId=target_id,
            amount=amount,
            timestamp=timestamp,
        )
        return await self._write(work, refusals, keyed)

    async def pay(
        self,
        account_id: str,
        amount: int,
        timestamp: int | None,
        idempotency_key: str | None = None,
    ) -> WriteOutcome:
        refusals = (
            _account_id_refusals(account_id, "accountId")
            + _amount_refusals(amount)
            + _timestamp_refusals(timestamp)
        )

        async def work(uow: UnitOfWork, now: int) -> WriteOutcome:
            self._refuse_future(timestamp, now)
            await uow.lock([account_id])
            account = uow.require(account_id, "accountId")
            ts = await self._settle_and_order(uow, timestamp, now)
            due_at = ts + CASHBACK_DELAY_MS
            if due_at > MAX_TIMESTAMP_MS:
                raise Refused.one(
                    RefusalCode.INVALID_TIMESTAMP,
                    "the cashback of a payment at this timestamp would fall due past the end "
                    "of representable time",
                    "timestamp",
                )
            _refuse_insufficient(account, amount)
            cashback = cashback_of(amount)
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
            await self._advance_clock(uow.conn, ts)
            payment = Payment(number, account_id, ts, amount, cashback, due_at)
            return WriteOutcome(
                balance=account.balance, payment=payment, accounts=(account.as_account(),)
            )

        keyed = _keyed(
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
            _account_id_refusals(survivor_id, "accountId")
            + _account_id_refusals(absorbed_id, "absorbedAccountId")
            + _timestamp_refusals(timestamp)
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
            survivor.outgoing += absorbed.outgoing
            survivor.pending_cashback += absorbed.pending_cashback
            absorbed.pending_cashback = 0
            survivor.next_cashback_due_at = min(
                (
                    due
                    for due in (survivor.next_cashback_due_at, absorbed.next_cashback_due_at)
                    if due is not None
                ),
                default=None,
            )
            absorbed.next_cashback_due_at = None
            await uow.flush()
            await uow.conn.execute(
                _CLOSE_MERGED, {"survivor": survivor_id, "absorbed": absorbed_id, "ts": ts}
            )
            await self._advance_clock(uow.conn, ts)
            return WriteOutcome(balance=survivor.balance, accounts=(survivor.as_account(),))

        keyed = _keyed(
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
        """Run `work` in one transaction; retry it when it loses a serialization race.

        Input refusals found before any I/O skip the work (but are stored under the
        request's idempotency key, like any outcome). An invalid key stores nothing.
        """
        if isinstance(keyed, Refusal):
            return WriteOutcome(refusals=(*input_refusals, keyed))
        if input_refusals and keyed is None:
            return WriteOutcome(refusals=tuple(input_refusals))
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    if keyed is not None:
                        claimed = await idempotency.claim(conn, keyed)
                        if isinstance(claimed, Refusal):
                            return WriteOutcome(refusals=(claimed,))
                        if claimed is not None:
                            return WriteOutcome.from_json(claimed)
                    outcome = await self._run(conn, work, input_refusals)
                    if keyed is not None:
                        await idempotency.store(conn, keyed.key, outcome.to_json())
                    return outcome
            except _TRANSIENT_ERRORS:
                if attempt >= self._limits.retries_max:
                    raise
                log.info("write lost a race, retrying (attempt %d)", attempt)
                await asyncio.sleep(
                    self._limits.retry_backoff_ms / 1000 * attempt * (1 + random.random())  # noqa: S311
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

    async def _settle_and_order(self, uow: UnitOfWork, requested: int | None, now: int) -> int:
        """Settle the locked accounts' due cashback, then return the mutation's timestamp.

        Cashback due by now is written at once and kept even if the mutation is then
        refused: it is owed whatever the request wanted. When the client clock runs ahead
        (`requested` > now), what falls due up to `requested` is credited too, but only
        written if the mutation succeeds. Either way a mutation never slips in before
        cashback that is due by its own timestamp.
        """
        await uow.settle_cashback(now)
        await uow.flush()
        if requested is not None and requested > now:
            await uow.settle_cashback(requested)
        newest = max(a.last_entry_at for a in uow.locked.values())
        if requested is None:
            return max(now, newest)
        if requested < newest:
            raise Refused.one(
                RefusalCode.TIMESTAMP_OUT_OF_ORDER,
                f"timestamp {requested} is earlier than the newest entry ({newest}) of an "
                "account this mutation touches",
                "timestamp",
            )
        return requested

    async def _advance_clock(self, conn: Conn, ts: int) -> None:
        if self.clock is ClockMode.CLIENT:
            await advance_client_clock(conn, ts)


def _account_id_refusals(account_id: str, field: str) -> list[Refusal]:
    if is_account_id(account_id):
        return []
    return [
        Refusal(
            RefusalCode.INVALID_ACCOUNT_ID,
            "an account id is 1 to 64 characters: a letter or digit, then letters, digits "
            "or _ . : @ -",
            (field,),
        )
    ]


def _amount_refusals(amount: int) -> list[Refusal]:
    if 1 <= amount <= MAX_MONEY:
        return []
    return [
        Refusal(
            RefusalCode.INVALID_AMOUNT,
            f"amount must be between 1 and {MAX_MONEY} minor units",
            ("amount",),
        )
    ]


def _timestamp_refusals(timestamp: int | None) -> list[Refusal]:
    if timestamp is None or 0 <= timestamp <= MAX_TIMESTAMP_MS:
        return []
    return [
        Refusal(
            RefusalCode.INVALID_TIMESTAMP,
            f"timestamp must be between 0 and {MAX_TIMESTAMP_MS}",
            ("timestamp",),
        )
    ]


def _refuse_insufficient(account: LockedAccount, amount: int) -> None:
    if amount > account.balance:
        raise Refused.one(
            RefusalCode.INSUFFICIENT_FUNDS,
            f"amount {amount} exceeds the balance of account {account.id!r} ({account.balance})",
            "amount",
        )


def _refuse_overflow(account: LockedAccount, amount: int) -> None:
    # Pending cashback is counted too, so crediting it later can never overflow.
    if account.balance + account.pending_cashback + amount > MAX_MONEY:
        raise Refused.one(
            RefusalCode.BALANCE_OVERFLOW,
            f"account {account.id!r} would hold more than {MAX_MONEY} minor units",
            "amount",
        )


def _keyed(key: str | None, operation: str, **arguments: object) -> KeyedRequest | Refusal | None:
    if key is None:
        return None
    if not is_idempotency_key(key):
        return idempotency.key_refusal()
    return KeyedRequest.of(key, operation, arguments)
