"""One account's statement: its entries in the ledger's order, streamed from one snapshot
through a server-side cursor, so that memory stays flat however long the history is."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg.sql import SQL

from bank_graphql.ledger.domain.models import Entry
from bank_graphql.ledger.domain.rules import MAX_TIMESTAMP_MS
from bank_graphql.ledger.storage.database import Conn, begin, end_snapshot
from bank_graphql.ledger.storage.reads import ENTRY_COLUMNS, ENTRY_ORDER, entry_from_row

# Any account, open or merged: a merged account's own entries stay its own.
_ACCOUNT_EXISTS = "SELECT EXISTS (SELECT FROM accounts WHERE id = %s)"

_IN_PERIOD = "account_id = %(account)s AND ts >= %(since)s AND ts < %(until)s"

_COUNT = SQL("SELECT count(*) FROM entries WHERE {}").format(SQL(_IN_PERIOD))

_ENTRIES = SQL("SELECT {} FROM entries WHERE {} ORDER BY {}").format(
    SQL(ENTRY_COLUMNS), SQL(_IN_PERIOD), SQL(", ").join(SQL(c) for c in ENTRY_ORDER)
)

BATCH_ROWS = 1000
"""Entries fetched from the server-side cursor at a time."""


@dataclass(frozen=True, slots=True)
class StatementPeriod:
    """Timestamps in ms: `since` included, `until` left out; None leaves that side open."""

    since: int | None = None
    until: int | None = None

    def params(self, account_id: str) -> dict[str, object]:
        return {
            "account": account_id,
            "since": 0 if self.since is None else self.since,
            "until": MAX_TIMESTAMP_MS + 1 if self.until is None else self.until,
        }


class Statement:
    """The entries of one account in one period, as of the snapshot that found `count`."""

    def __init__(self, conn: Conn, account_id: str, period: StatementPeriod, count: int) -> None:
        self._conn = conn
        self._params = period.params(account_id)
        self.count = count

    async def entries(self) -> AsyncIterator[Entry]:
        """Each entry, with the balance right after it, in the ledger's order."""
        async with self._conn.cursor(name="statement") as cursor:
            cursor.itersize = BATCH_ROWS
            await cursor.execute(_ENTRIES, self._params)
            async for row in cursor:
                yield entry_from_row(row)


@asynccontextmanager
async def account_statement(
    conn: Conn, account_id: str, period: StatementPeriod
) -> AsyncIterator[Statement | None]:
    """The statement of `account_id` (None when no such account exists), read from one
    REPEATABLE READ, READ ONLY snapshot held until exit. `conn` is in autocommit mode."""
    await begin(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        # The snapshot lasts as long as its reader takes (a pipe into a pager, say).
        await conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        cursor = await conn.execute(_ACCOUNT_EXISTS, (account_id,))
        found = await cursor.fetchone()
        if not (found and found[0]):
            yield None
            return
        cursor = await conn.execute(_COUNT, period.params(account_id))
        counted = await cursor.fetchone()
        yield Statement(conn, account_id, period, int(counted[0]) if counted else 0)
    finally:
        await end_snapshot(conn)
