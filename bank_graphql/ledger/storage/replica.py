"""Reads from a streaming replica, never older than the primary was when the read began.

Before a read goes to the replica, the primary names its WAL position (a function that
touches no table). The read runs on the replica only once the replica has replayed that
far, so it sees every write acknowledged before it began: the caller's own, made through
any process, included. A replica that has not caught up within `lag_max_ms` sends the read
to the primary, and so does every read for the next `primary_for_s` seconds (one read per
interval then tries the replica again): a lagging or unreachable replica costs reads a
fallback, never a wrong answer.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from psycopg import errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bank_graphql.ledger.storage.database import Conn, begin

log = logging.getLogger(__name__)

_PRIMARY_POSITION = "SELECT pg_current_wal_lsn()::text"
# A server that is not in recovery (the URL reaches a primary, or a promoted replica) is as
# current as its own WAL.
_REPLAYED = """
SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn()
       END >= %s::pg_lsn
"""
_FIRST_PAUSE_S = 0.001
_LAST_PAUSE_S = 0.02
# A replica that is down empties its pool: a read waits this long for a connection before
# it goes to the primary.
_CONNECTION_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class ReplicaLimits:
    lag_max_ms: int = 200
    """How long a read waits for the replica to replay what the primary had written."""
    primary_for_s: float = 1.0
    """After a read fell back to the primary, reads go straight there for this long."""


async def primary_position(conn: Conn) -> str:
    """The primary's WAL position now: every write acknowledged so far lies before it."""
    cursor = await conn.execute(_PRIMARY_POSITION)
    row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def replayed_within(conn: Conn, position: str, wait_s: float) -> bool:
    """Has the server behind `conn` replayed the WAL up to `position`, waiting at most
    `wait_s` for it? `conn` is idle in autocommit; a snapshot taken on it afterwards holds
    everything written before `position`."""
    deadline = time.monotonic() + wait_s
    pause = _FIRST_PAUSE_S
    while True:
        cursor = await conn.execute(_REPLAYED, (position,))
        row = await cursor.fetchone()
        if row is not None and row[0]:
            return True
        if time.monotonic() + pause > deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, _LAST_PAUSE_S)


class Replica:
    """The replica's pool, and what it has served."""

    def __init__(self, pool: AsyncConnectionPool[Conn], limits: ReplicaLimits) -> None:
        self.pool = pool
        self.limits = limits
        self.reads = 0
        """Reads the replica served."""
        self.fallbacks = 0
        """Reads that would have gone to the replica and went to the primary."""
        self._primary_until = 0.0

    def in_use(self) -> bool:
        """False for a while after the replica lagged past the limit or failed."""
        if time.monotonic() >= self._primary_until:
            return True
        self.fallbacks += 1
        return False

    async def snapshot_at(self, position: str, statement: str) -> Conn | None:
        """A connection of the replica's pool in a transaction opened by `statement` whose
        snapshot holds everything written before `position`; None when the replica does not
        get there in time or cannot be reached (the read then goes to the primary)."""
        wait_s = self.limits.lag_max_ms / 1000
        try:
            conn = await self.pool.getconn(timeout=max(wait_s, _CONNECTION_WAIT_S))
        except PoolTimeout:
            self._fall_back("no connection to it")
            return None
        try:
            if await replayed_within(conn, position, wait_s):
                await begin(conn, statement)
                self.reads += 1
                return conn
        except (errors.OperationalError, errors.InterfaceError) as exc:
            await self.pool.putconn(conn)
            self._fall_back(str(exc).strip().splitlines()[0] if str(exc) else "lost")
            return None
        except BaseException:
            await self.pool.putconn(conn)
            raise
        await self.pool.putconn(conn)
        self._fall_back(f"behind by more than {self.limits.lag_max_ms} ms")
        return None

    def _fall_back(self, why: str) -> None:
        hold_s = self.limits.primary_for_s
        log.warning("the replica is %s: reads go to the primary for %.1f s", why, hold_s)
        self.fallbacks += 1
        self._primary_until = time.monotonic() + hold_s
