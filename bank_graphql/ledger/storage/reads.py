"""Read queries, all run inside one REPEATABLE READ, READ ONLY snapshot per request."""

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bank_graphql.ledger.domain.access import Principal
from bank_graphql.ledger.domain.models import Account, Entry, EntryKind, Page, Payment, Spender
from bank_graphql.ledger.storage.database import Conn
from bank_graphql.ledger.storage.errors import translated
from bank_graphql.ledger.storage.keyset import Keyset, PageRequest, Window

_BIGINT_MAX = 2**63 - 1
# Account ids are ASCII (the accounts table checks it) and sort by bytes: "\x7f" is above them all.
_ID_ABOVE_ALL = "\x7f"

# Open accounts by id are found as survivor_id = id, not merged_into IS NULL (the same, by
# the merged_is_closed constraint), so that no plan scans the top spenders' partial index.
# Outgoing is read through least(outgoing, money_max()): a total written past the ceiling by an
# earlier version still reads as a valid amount.
_ACCOUNTS_BY_ID = """
SELECT id, created_at, least(outgoing, money_max()) FROM accounts
WHERE id = ANY(%s) AND survivor_id = id
"""

# Balance at `at`: the last entry at or before it, plus cashback due by then but not yet
# written (only a future `at` can see any: everything due by now is settled first).
_BALANCES_AT = """
SELECT k.ord,
       CASE WHEN k.at < a.created_at THEN NULL ELSE
           coalesce((SELECT e.balance_after FROM entries e
                     WHERE e.account_id = k.id AND e.ts <= k.at
                     ORDER BY e.ts DESC, e.id DESC LIMIT 1), 0)
           + CASE WHEN a.next_cashback_due_at <= k.at THEN
                 (SELECT coalesce(sum(p.cashback), 0)::bigint
                  FROM accounts o JOIN payments p ON p.account_id = o.id
                  WHERE o.survivor_id = k.id AND NOT p.settled AND p.cashback_due_at <= k.at)
             ELSE 0 END
       END
FROM unnest(%(ids)s::text[], %(ats)s::bigint[]) WITH ORDINALITY AS k (id, at, ord)
JOIN accounts a ON a.id = k.id
"""

_PAYMENT = """
SELECT p.id, o.survivor_id, p.ts, p.amount, p.cashback, p.cashback_due_at
FROM payments p JOIN accounts o ON o.id = p.account_id
WHERE p.id = %(number)s AND o.survivor_id = %(owner)s
"""

_TOP_SPENDERS = """
SELECT id, least(outgoing, money_max()) FROM accounts WHERE merged_into IS NULL
ORDER BY outgoing DESC, id LIMIT %s
"""

# Within a credential's scope: found by id, ranked here (a scope is a short list).
_TOP_SPENDERS_IN = """
SELECT id, least(outgoing, money_max()) FROM accounts WHERE id = ANY(%s) AND survivor_id = id
ORDER BY outgoing DESC, id LIMIT %s
"""


def _account(row: tuple[Any, ...]) -> Account:
    return Account(id=row[0], created_at=row[1], outgoing=row[2])


def entry_from_row(row: tuple[Any, ...]) -> Entry:
    id_, account_id, ts, kind, amount, balance_after, counterparty_id, payment_id, actor = row
    return Entry(
        id=int(id_),
        account_id=str(account_id),
        ts=int(ts),
        kind=EntryKind(kind),
        amount=int(amount),
        balance_after=int(balance_after),
        counterparty_id=None if counterparty_id is None else str(counterparty_id),
        payment_id=None if payment_id is None else int(payment_id),
        actor=actor,
    )


def _payment(row: tuple[Any, ...]) -> Payment:
    return Payment(*row)


def _account_pages(scope: str) -> Keyset[Account]:
    return Keyset(
        columns="id, created_at, least(outgoing, money_max())",
        source="accounts",
        scope=scope,
        key_columns=["id"],
        key_types=["text"],
        to_row=_account,
    )


_ACCOUNT_PAGES = _account_pages("merged_into IS NULL")
# A credential's scope is a short list: its accounts are found by id.
_SCOPED_ACCOUNT_PAGES = _account_pages("id = ANY(%(scope)s) AND survivor_id = id")

ENTRY_COLUMNS = (
    "id, account_id, ts, kind::text, amount, balance_after, counterparty_id, payment_id, actor"
)
"""An entry's columns, as `entry_from_row` reads them."""
ENTRY_ORDER = ("ts", "id")
"""The ledger's order of one account's entries: its history pages and its balanceAfter chain."""

_ENTRY_PAGES: Keyset[Entry] = Keyset(
    columns=ENTRY_COLUMNS,
    source="entries",
    scope="account_id = %(account)s",
    key_columns=ENTRY_ORDER,
    key_types=["bigint", "bigint"],
    to_row=entry_from_row,
)

_PAYMENT_PAGES: Keyset[Payment] = Keyset(
    columns="p.id, o.survivor_id, p.ts, p.amount, p.cashback, p.cashback_due_at",
    source="payments p JOIN accounts o ON o.id = p.account_id",
    scope="o.survivor_id = %(owner)s",
    key_columns=["p.id"],
    key_types=["bigint"],
    to_row=_payment,
)


class Snapshot:
    """Reads as of one instant: every method sees the same committed state, and only the
    accounts that exist for `principal`. Outside it an account does not exist: no row, no
    balance, no entry, no payment, no rank.

    The caller holds `conn` inside a REPEATABLE READ, READ ONLY transaction.
    """

    def __init__(self, conn: Conn, now: int, principal: Principal) -> None:
        self.conn = conn
        self.now = now
        self.principal = principal
        self.scope = principal.accounts

    def _sees(self, account_id: str) -> bool:
        return self.principal.sees(account_id)

    @translated
    async def accounts_by_id(self, ids: Sequence[str]) -> dict[str, Account]:
        cursor = await self.conn.execute(_ACCOUNTS_BY_ID, ([i for i in ids if self._sees(i)],))
        return {row[0]: _account(row) for row in await cursor.fetchall()}

    @translated
    async def accounts(self, request: PageRequest) -> Page[Account]:
        window = Window(above=("",), below=(_ID_ABOVE_ALL,))
        if self.scope is None:
            return await _ACCOUNT_PAGES.page(self.conn, {}, window, request)
        scope = {"scope": sorted(self.scope)}
        return await _SCOPED_ACCOUNT_PAGES.page(self.conn, scope, window, request)

    @translated
    async def balances(self, keys: Sequence[tuple[str, int]]) -> list[int | None]:
        """Balance of each (account id, at); None where the account did not exist yet."""
        seen = [k if self._sees(k[0]) else ("", 0) for k in keys]
        cursor = await self.conn.execute(
            _BALANCES_AT, {"ids": [k[0] for k in seen], "ats": [k[1] for k in seen]}
        )
        found = {int(ord_): balance for ord_, balance in await cursor.fetchall()}
        return [found.get(i) for i in range(1, len(keys) + 1)]

    @translated
    async def entries(
        self, account_id: str, request: PageRequest, since: int | None, until: int | None
    ) -> Page[Entry]:
        """A page of one account's entries with timestamps in [since, until], both inclusive."""
        window = Window(
            above=(-1 if since is None else since, 0),
            below=(_BIGINT_MAX if until is None else until, _BIGINT_MAX),
        )
        if not self._sees(account_id):
            return Page(rows=[], has_previous=False, has_next=False)
        page = await _ENTRY_PAGES.page(self.conn, {"account": account_id}, window, request)
        if self.scope is None:
            return page
        shown = [self.principal.shown(e) for e in page.rows]
        return replace(page, rows=shown)

    @translated
    async def payments(self, owner_id: str, request: PageRequest) -> Page[Payment]:
        window = Window(above=(0,), below=(_BIGINT_MAX,))
        if not self._sees(owner_id):
            return Page(rows=[], has_previous=False, has_next=False)
        return await _PAYMENT_PAGES.page(self.conn, {"owner": owner_id}, window, request)

    @translated
    async def payment(self, owner_id: str, number: int) -> Payment | None:
        if not self._sees(owner_id):
            return None
        cursor = await self.conn.execute(_PAYMENT, {"number": number, "owner": owner_id})
        row = await cursor.fetchone()
        return None if row is None else _payment(row)

    @translated
    async def top_spenders(self, first: int) -> list[Spender]:
        if self.scope is None:
            cursor = await self.conn.execute(_TOP_SPENDERS, (first,))
        else:
            cursor = await self.conn.execute(_TOP_SPENDERS_IN, (sorted(self.scope), first))
        return [Spender(account_id=r[0], outgoing=r[1]) for r in await cursor.fetchall()]
