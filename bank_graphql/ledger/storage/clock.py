"""Reading "now" of either clock; the client clock's is kept in the database."""

from bank_graphql.ledger.domain.clock import ClockMode, wall_clock_ms
from bank_graphql.ledger.storage.database import Conn


def wall_or_client(mode: ClockMode) -> int | None:
    """What the SQL write functions take as the clock: the wall clock, or None for the
    client clock (they read its now themselves, under the transaction's locks)."""
    return wall_clock_ms() if mode is ClockMode.SYSTEM else None


async def read_now(conn: Conn, mode: ClockMode) -> int:
    """Now: the wall clock without a round trip, or the client clock's, read from the
    database."""
    wall = wall_or_client(mode)
    if wall is not None:
        return wall
    cursor = await conn.execute("SELECT ledger_now(%s)", (wall,))
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
