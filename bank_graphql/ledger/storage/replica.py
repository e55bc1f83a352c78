"""Reads from a streaming replica, never older than the primary was when the read began.

Before a read goes to the replica, the primary names its WAL insert position (a function
that touches no table): every write acknowledged so far lies before it, with asynchronous
commit too. The read runs on the replica only once the replica has replayed that far, so it
sees every such write: the caller's own, made through any process, included.

A replica that does not catch up within `lag_max_ms`, cannot be reached, stops answering, is
no longer a standby, or fails a read (a conflict with recovery, say) sends reads to the
primary. It is then tried again by one read at a time, `primary_for_s` apart, until it
serves one: a failing replica costs reads a fallback, never a wrong answer or a hang.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from psycopg import errors, pq
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bank_graphql.ledger.storage.database import Conn, begin

log = logging.getLogger(__name__)
T = TypeVar("T")

_PRIMARY_POSITION = "SELECT pg_current_wal_insert_lsn()::text"
# A promoted replica has left the primary's timeline: it is no replica any more.
_REPLAYED = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn"
_FAILED = pq.TransactionStatus.INERROR
_FIRST_PAUSE_S = 0.001
_LAST_PAUSE_S = 0.02
ANSWER_WAIT_S = 0.5
"""How long the replica has to answer one statement, or to hand out a connection, before a
read stops waiting for it."""


@dataclass(frozen=True, slots=True)
class ReplicaLimits:
    lag_max_ms: int = 200
    """How long a read waits for the replica to replay what the primary had written."""
    primary_for_s: float = 1.0
    """After the replica failed, how long reads go straight to the primary before one tries
    the replica again."""


async def primary_position(conn: Conn) -> str:
    """The primary's WAL insert position now: every write acknowledged so far lies before
    it, whether its commit waited for the WAL to be flushed or not."""
    cursor = await conn.execute(_PRIMARY_POSITION)
    row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def within(conn: Conn, work: Awaitable[T], timeout_s: float) -> T:
    """`work` on `conn`, or TimeoutError after `timeout_s` with `conn` closed. Cancelling a
    query waits for its server; a server that stopped answering must not hold the caller."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            raise TimeoutError
        return task.result()
    finally:
        if not task.done():
            await conn.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _replayed(conn: Conn, position: str, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    pause = _FIRST_PAUSE_S
    while True:
        cursor = await conn.execute(_REPLAYED, (position,))
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return False
        if row[1]:
            return True
        if time.monotonic() + pause > deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, _LAST_PAUSE_S)


async def replayed_within(conn: Conn, position: str, wait_s: float) -> bool:
    """Has the standby behind `conn` replayed the WAL up to `position`, waiting at most
    `wait_s` for it? False for a server that is not a standby; TimeoutError, with `conn`
    closed, when it stops answering. `conn` is idle in autocommit; a snapshot taken on it
    afterwards holds everything written before `position`."""
    return await within(conn, _replayed(conn, position, wait_s), wait_s + ANSWER_WAIT_S)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Replica:
    """The replica's pool, and what it has served."""

    def __init__(self, pool: AsyncConnectionPool[Conn], limits: ReplicaLimits) -> None:
        self.pool = pool
        self.limits = limits
        self.reads = 0
        """Reads the replica served."""
        self.fallbacks = 0
        """Reads that would have gone to the replica and went to the primary."""
        self._failing = False
        self._retry_at = 0.0
        self._probing = False

    def in_use(self) -> bool:
        """May a read try the replica? Not while it is failing, but for one read at a time,
        `primary_for_s` apart."""
        if self._failing and (self._probing or time.monotonic() < self._retry_at):
            self.fallbacks += 1
            return False
        return True

    async def snapshot_at(self, position: str, statement: str) -> Conn | None:
        """A connection of the replica's pool in a transaction opened by `statement` whose
        snapshot holds everything written before `position`; None when the replica does not
        get there in time or fails (the read then goes to the primary)."""
        if self._failing:
            if self._probing:
                self.fallbacks += 1
                return None
            self._probing = True
        try:
            return await self._snapshot_at(position, statement)
        finally:
            self._probing = False

    async def _snapshot_at(self, position: str, statement: str) -> Conn | None:
        try:
            conn = await self.pool.getconn(timeout=ANSWER_WAIT_S)
        except PoolTimeout:
            self._fall_back("cannot be reached")
            return None
        try:
            if await replayed_within(conn, position, self.limits.lag_max_ms / 1000):
                await within(conn, begin(conn, statement), ANSWER_WAIT_S)
                self._serving()
                return conn
            why = f"has not replayed the primary's writes within {self.limits.lag_max_ms} ms"
        except TimeoutError:
            why = "does not answer"
        except (errors.OperationalError, errors.InterfaceError) as exc:
            why = f"cannot be reached ({_reason(exc)})"
        except BaseException:
            await self.pool.putconn(conn)
            raise
        await self.pool.putconn(conn)
        self._fall_back(why)
        return None

    def note_end(self, conn: Conn) -> None:
        """A read on `conn` has ended: one that failed there (the replica cancelled it in a
        conflict with recovery, or went away) sends the next reads to the primary."""
        if conn.broken or conn.closed or conn.info.transaction_status == _FAILED:
            self._failed("failed a read")

    def _serving(self) -> None:
        self.reads += 1
        if self._failing:
            self._failing = False
            log.warning("the replica serves reads again")

    def _fall_back(self, why: str) -> None:
        self.fallbacks += 1
        self._failed(why)

    def _failed(self, why: str) -> None:
        self._retry_at = time.monotonic() + self.limits.primary_for_s
        if not self._failing:
            self._failing = True
            log.warning("the replica %s: reads go to the primary until it catches up", why)
