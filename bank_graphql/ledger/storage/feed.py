"""The live feed's queries: positions handed out by the database (sql/0006), pages of the
feed and of one account's entries, each read on a pooled connection held only for the query.
"""

from psycopg_pool import AsyncConnectionPool

from bank_graphql.ledger.domain.live import FeedItem, TransactionSnapshot
from bank_graphql.ledger.domain.models import Entry
from bank_graphql.ledger.storage.database import Conn
from bank_graphql.ledger.storage.errors import translated
from bank_graphql.ledger.storage.reads import entry_from_row

_SEQUENCE = "SELECT ledger_sequence_feed(%s)"

_FEED_END = "SELECT last_position FROM feed_state"

_NOW = "SELECT pg_current_snapshot()::text"

_FEED_PAGE = """
SELECT f.position, coalesce(e.xid::text, '0'),
       e.id, e.account_id, e.ts, e.kind::text, e.amount, e.balance_after, e.counterparty_id,
       e.payment_id, e.actor
FROM feed f JOIN entries e ON e.id = f.entry_id
WHERE f.position > %(after)s AND f.position <= %(upto)s
ORDER BY f.position LIMIT %(rows)s
"""

_SCOPED_FEED_PAGE = """
SELECT f.position, coalesce(e.xid::text, '0'),
       e.id, e.account_id, e.ts, e.kind::text, e.amount, e.balance_after, e.counterparty_id,
       e.payment_id, e.actor
FROM feed f JOIN entries e ON e.id = f.entry_id
WHERE f.position > %(after)s AND f.position <= %(upto)s AND e.account_id = ANY(%(scope)s)
ORDER BY f.position LIMIT %(rows)s
"""

_ACCOUNT_PAGE = """
SELECT e.id, e.account_id, e.ts, e.kind::text, e.amount, e.balance_after, e.counterparty_id,
       e.payment_id, e.actor FROM entries e
WHERE e.account_id = %s AND (e.ts, e.id) > (%s, %s)
ORDER BY e.ts, e.id LIMIT %s
"""

_ACCOUNT_LAST_KEY = """
SELECT ts, id FROM entries WHERE account_id = %s ORDER BY ts DESC, id DESC LIMIT 1
"""

_ACCOUNT_OPEN = "SELECT EXISTS (SELECT FROM accounts WHERE id = %s AND survivor_id = id)"


SCOPED_SCAN_MAX = 20_000


class FeedReads:
    def __init__(self, pool: AsyncConnectionPool[Conn]) -> None:
        self._pool = pool

    @translated
    async def sequence(self, rows_max: int) -> int:
        """Give positions to up to `rows_max` new entries (0 when another process is at it)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_SEQUENCE, (rows_max,))
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

    @translated
    async def end(self) -> int:
        """The last position handed out."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_FEED_END)
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

    @translated
    async def snapshot(self) -> TransactionSnapshot:
        """Which transactions have committed by now."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_NOW)
            row = await cursor.fetchone()
            assert row is not None
            return TransactionSnapshot.parse(str(row[0]))

    @translated
    async def page(
        self, scope: list[str] | None, after: int, upto: int, rows: int
    ) -> tuple[list[FeedItem], int]:
        """Entries of `scope` (None: all) at positions in (after, upto], in order, at most
        `rows`; and the position read up to (past entries outside the scope). A scoped page
        looks at no more than `SCOPED_SCAN_MAX` positions, so that a credential whose
        accounts are rare cannot make one query read the whole feed."""
        if scope is not None:
            upto = min(upto, after + SCOPED_SCAN_MAX)
        params = {"after": after, "upto": upto, "rows": rows, "scope": scope}
        query = _FEED_PAGE if scope is None else _SCOPED_FEED_PAGE
        async with self._pool.connection() as conn:
            cursor = await conn.execute(query, params)
            found = await cursor.fetchall()
        items = [FeedItem(int(row[0]), entry_from_row(row[2:]), int(row[1])) for row in found]
        return items, items[-1].position if len(found) == rows else upto

    @translated
    async def account_page(self, account_id: str, after: tuple[int, int], rows: int) -> list[Entry]:
        """One account's entries after `after` (timestamp, id), in the account's order."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_ACCOUNT_PAGE, (account_id, *after, rows))
            return [entry_from_row(row) for row in await cursor.fetchall()]

    @translated
    async def account_last_key(self, account_id: str) -> tuple[int, int]:
        """The key of the account's newest entry, or one below every key when it has none."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_ACCOUNT_LAST_KEY, (account_id,))
            row = await cursor.fetchone()
            return (-1, 0) if row is None else (int(row[0]), int(row[1]))

    @translated
    async def account_open(self, account_id: str) -> bool:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_ACCOUNT_OPEN, (account_id,))
            row = await cursor.fetchone()
            return row is not None and bool(row[0])
