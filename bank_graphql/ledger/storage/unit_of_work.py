"""One write transaction: lock accounts, settle due cashback, append entries, flush once.

A `UnitOfWork` lives inside a transaction the service opened. It keeps the working state of
the accounts it locked, collects the entries to append, and writes everything in a single
statement at `flush()`. It never commits: the service that opened the transaction does.
"""

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bank_graphql.ledger.domain import checks
from bank_graphql.ledger.domain.models import OUTGOING_KINDS, Account, Entry, EntryKind
from bank_graphql.ledger.domain.refusals import Refused
from bank_graphql.ledger.domain.rules import add_to_total
from bank_graphql.ledger.storage.database import Conn

log = logging.getLogger(__name__)

# Id order: two transactions locking the same accounts always queue in the same order, so
# opposing transfers can never deadlock each other. Closed (merged) accounts are not locked.
_LOCK_ACCOUNTS = """
SELECT id, created_at, balance, least(outgoing, money_max()), pending_cashback,
       next_cashback_due_at, last_entry_at
FROM accounts
WHERE id = ANY(%s) AND merged_into IS NULL
ORDER BY id
FOR UPDATE
"""

_DUE_CASHBACK = """
SELECT p.id, o.survivor_id, p.cashback, p.cashback_due_at
FROM payments p JOIN accounts o ON o.id = p.account_id
WHERE o.survivor_id = ANY(%(owners)s) AND NOT p.settled AND p.cashback_due_at <= %(horizon)s
ORDER BY p.cashback_due_at, p.id
"""

_NEXT_CASHBACK_DUE = """
SELECT o.survivor_id, min(p.cashback_due_at)
FROM payments p JOIN accounts o ON o.id = p.account_id
WHERE o.survivor_id = ANY(%(owners)s) AND NOT p.settled AND p.cashback_due_at > %(horizon)s
GROUP BY o.survivor_id
"""

# Entries, account states and settled payments in one round trip. Entries are inserted in
# list order, so their ids follow the order they were appended in.
_FLUSH = """
WITH new_entries AS (
    INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id, payment_id)
    SELECT * FROM unnest(
        %(e_account)s::text[], %(e_ts)s::bigint[], %(e_kind)s::text[]::entry_kind[],
        %(e_amount)s::bigint[], %(e_balance)s::bigint[], %(e_counterparty)s::text[],
        %(e_payment)s::bigint[]
    )
    RETURNING id, account_id, ts, kind, amount, balance_after, counterparty_id, payment_id
), changed_accounts AS (
    UPDATE accounts AS a
    SET balance = c.balance, outgoing = c.outgoing, pending_cashback = c.pending_cashback,
        next_cashback_due_at = c.next_due, last_entry_at = c.last_entry_at
    FROM unnest(
        %(a_id)s::text[], %(a_balance)s::bigint[], %(a_outgoing)s::bigint[],
        %(a_pending)s::bigint[], %(a_next_due)s::bigint[], %(a_last_entry_at)s::bigint[]
    ) AS c (id, balance, outgoing, pending_cashback, next_due, last_entry_at)
    WHERE a.id = c.id
), settled_payments AS (
    UPDATE payments SET settled = true WHERE id = ANY(%(settled)s::bigint[])
)
SELECT id, account_id, ts, kind::text, amount, balance_after, counterparty_id, payment_id
FROM new_entries ORDER BY id
"""


@dataclass(slots=True)
class LockedAccount:
    """The working state of an account row this transaction holds `FOR UPDATE`."""

    id: str
    created_at: int
    balance: int
    outgoing: int
    pending_cashback: int
    next_cashback_due_at: int | None
    last_entry_at: int

    def as_account(self) -> Account:
        return Account(id=self.id, created_at=self.created_at, outgoing=self.outgoing)


@dataclass(frozen=True, slots=True)
class _NewEntry:
    account_id: str
    ts: int
    kind: EntryKind
    amount: int
    balance_after: int
    counterparty_id: str | None
    payment_id: int | None


def _cashback_time(account: LockedAccount, payment_id: int, due_at: int) -> int:
    """Cashback is stamped with its due time. Cashback found still unpaid behind a later
    entry of its account (a ledger written by an earlier version could hold some) is
    stamped with that entry's time instead: late, but the ledger stays in time order."""
    if due_at >= account.last_entry_at:
        return due_at
    log.warning(
        "cashback of payment%d was due at %d, before the newest entry of account %r; "
        "credited at that entry's time, %d",
        payment_id,
        due_at,
        account.id,
        account.last_entry_at,
    )
    return account.last_entry_at


def entry_from_row(row: tuple[Any, ...]) -> Entry:
    id_, account_id, ts, kind, amount, balance_after, counterparty_id, payment_id = row
    return Entry(
        id=int(id_),
        account_id=str(account_id),
        ts=int(ts),
        kind=EntryKind(kind),
        amount=int(amount),
        balance_after=int(balance_after),
        counterparty_id=None if counterparty_id is None else str(counterparty_id),
        payment_id=None if payment_id is None else int(payment_id),
    )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The working state at one moment, to go back to when a batch item is refused."""

    accounts: dict[str, LockedAccount]
    entries: int
    settled_payments: int


@dataclass(slots=True)
class UnitOfWork:
    conn: Conn
    locked: dict[str, LockedAccount] = field(default_factory=dict)
    _entries: list[_NewEntry] = field(default_factory=list)
    _settled_payments: list[int] = field(default_factory=list)

    async def lock(self, account_ids: Iterable[str]) -> dict[str, LockedAccount]:
        """Lock the open accounts among `account_ids`; missing or merged ones are left out."""
        cursor = await self.conn.execute(_LOCK_ACCOUNTS, (sorted(set(account_ids)),))
        for row in await cursor.fetchall():
            account = LockedAccount(*row)
            self.locked[account.id] = account
        return self.locked

    def require(self, account_id: str, field: str) -> LockedAccount:
        account = self.locked.get(account_id)
        if account is None:
            raise Refused([checks.not_found(account_id, field)])
        return account

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            {i: dataclasses.replace(a) for i, a in self.locked.items()},
            len(self._entries),
            len(self._settled_payments),
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Forget everything since `checkpoint`; account objects are updated in place."""
        for account_id, saved in checkpoint.accounts.items():
            current = self.locked[account_id]
            for f in dataclasses.fields(LockedAccount):
                setattr(current, f.name, getattr(saved, f.name))
        del self._entries[checkpoint.entries :]
        del self._settled_payments[checkpoint.settled_payments :]

    async def settle_cashback(
        self,
        horizon: int,
        *,
        only: Iterable[str] | None = None,
        every_account: bool = False,
    ) -> None:
        """Credit every cashback due at or before `horizon` to the locked accounts owning it
        (all of them, or those in `only`).

        Accounts whose `next_cashback_due_at` is later are skipped without a query, unless
        `every_account` asks to look at each (the sweeper does, trusting no shortcut).
        """
        candidates = self.locked.values() if only is None else [self.locked[i] for i in only]
        owners = [
            a.id
            for a in candidates
            if every_account
            or (a.next_cashback_due_at is not None and a.next_cashback_due_at <= horizon)
        ]
        if not owners:
            return
        params = {"owners": owners, "horizon": horizon}
        cursor = await self.conn.execute(_DUE_CASHBACK, params)
        for payment_id, owner_id, cashback, due_at in await cursor.fetchall():
            account = self.locked[owner_id]
            account.pending_cashback -= cashback
            ts = _cashback_time(account, payment_id, due_at)
            self.append(account, EntryKind.CASHBACK, cashback, ts, payment_id=payment_id)
            self._settled_payments.append(payment_id)
        next_due: dict[str, int] = {}
        cursor = await self.conn.execute(_NEXT_CASHBACK_DUE, params)
        for owner_id, due_at in await cursor.fetchall():
            next_due[owner_id] = due_at
        for owner_id in owners:
            self.locked[owner_id].next_cashback_due_at = next_due.get(owner_id)

    def append(
        self,
        account: LockedAccount,
        kind: EntryKind,
        amount: int,
        ts: int,
        *,
        counterparty_id: str | None = None,
        payment_id: int | None = None,
    ) -> int:
        """Apply one entry to the account's working state and queue it for the flush.

        Returns its position among the entries the next `flush` returns."""
        assert ts >= account.last_entry_at, "callers check timestamp order first"
        incoming = kind in {
            EntryKind.DEPOSIT,
            EntryKind.TRANSFER_IN,
            EntryKind.CASHBACK,
            EntryKind.MERGE_IN,
        }
        account.balance += amount if incoming else -amount
        assert account.balance >= 0, "callers check funds first"
        if kind in OUTGOING_KINDS:
            account.outgoing = add_to_total(account.outgoing, amount)
        account.last_entry_at = ts
        self._entries.append(
            _NewEntry(account.id, ts, kind, amount, account.balance, counterparty_id, payment_id)
        )
        return len(self._entries) - 1

    async def flush(self) -> list[Entry]:
        """Write the queued entries and every locked account's state; returns the new entries."""
        if not self._entries and not self._settled_payments:
            return []
        entries, self._entries = self._entries, []
        accounts = list(self.locked.values())
        settled, self._settled_payments = self._settled_payments, []
        cursor = await self.conn.execute(
            _FLUSH,
            {
                "e_account": [e.account_id for e in entries],
                "e_ts": [e.ts for e in entries],
                "e_kind": [e.kind.value for e in entries],
                "e_amount": [e.amount for e in entries],
                "e_balance": [e.balance_after for e in entries],
                "e_counterparty": [e.counterparty_id for e in entries],
                "e_payment": [e.payment_id for e in entries],
                "a_id": [a.id for a in accounts],
                "a_balance": [a.balance for a in accounts],
                "a_outgoing": [a.outgoing for a in accounts],
                "a_pending": [a.pending_cashback for a in accounts],
                "a_next_due": [a.next_cashback_due_at for a in accounts],
                "a_last_entry_at": [a.last_entry_at for a in accounts],
                "settled": settled,
            },
        )
        return [entry_from_row(row) for row in await cursor.fetchall()]
