"""Reads from a streaming replica, never older than the primary was when the read began.

Before a read goes to the replica, the primary names a WAL position (a function that touches
no table) that every write acknowledged so far lies before: the flushed position when
commits wait for their flush, the inserted one under `synchronous_commit = off`. The read
runs on the replica only once the replica has replayed that far, so it sees every such
write: the caller's own, made through any process, included.

A replica that does not catch up within `lag_max_ms`, cannot be reached, stops answering, is
no longer a standby, or fails a read (a conflict with recovery, say) sends reads to the
primary. It is then tried again by one read at a time, `primary_for_s` apart, until it
serves one: a failing replica costs reads a fallback, never a wrong answer or a hang.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from psycopg import errors, pq
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bank_graphql.ledger.storage.database import ANSWER_MARGIN_S, Conn, begin, within

log = logging.getLogger(__name__)

_PRIMARY_POSITION = """
SELECT CASE WHEN current_setting('synchronous_commit') = 'off' THEN pg_current_wal_insert_lsn()
       ELSE pg_current_wal_flush_lsn() END::text
"""
# A promoted replica has left the primary's timeline: it is no replica any more.
_REPLAYED = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn"
_FAILED = pq.TransactionStatus.INERROR
_FIRST_PAUSE_S = 0.001
_LAST_PAUSE_S = 0.02
# A replica that goes on failing is told in the log once in this long.
_WARNING_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class ReplicaLimits:
    lag_max_ms: int = 200
    """How long a read waits for the replica to replay what the primary had written."""
    primary_for_s: float = 1.0
    """After the replica failed, how long reads go straight to the primary before one tries
    the replica again."""


async def primary_position(conn: Conn) -> str:
    """A WAL position of the primary that every write acknowledged so far lies before."""
    cursor = await conn.execute(_PRIMARY_POSITION)
    row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def _replayed(conn: Conn, position: str, wait_s: float) -> bool | None:
    deadline = time.monotonic() + wait_s
    pause = _FIRST_PAUSE_S
    while True:
        cursor = await conn.execute(_REPLAYED, (position,))
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return None
        if row[1]:
            return True
        if time.monotonic() + pause > deadline:
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, _LAST_PAUSE_S)


async def replayed_within(conn: Conn, position: str, wait_s: float) -> bool | None:
    """Has the standby behind `conn` replayed the WAL up to `position`, waiting at most
    `wait_s` for it? None for a server that is not a standby; TimeoutError, with `conn`
    closed, when it stops answering. `conn` is idle in autocommit; a snapshot taken on it
    afterwards holds everything written before `position`."""
    return await within(conn, _replayed(conn, position, wait_s), wait_s + ANSWER_MARGIN_S)


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
        self._failures = 0
        """Failures so far: a read begun before the latest one cannot vouch for the replica."""
        self._failing = False
        self._retry_at = 0.0
        self._probing = False
        self._warned_at = -_WARNING_INTERVAL_S

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
        if not self.in_use():
            return None
        probe = self._failing
        self._probing = self._probing or probe
        try:
            return await self._snapshot_at(position, statement, self._failures)
        finally:
            if probe:
                self._probing = False

    async def _snapshot_at(self, position: str, statement: str, failures: int) -> Conn | None:
        # Connections the replica dropped while they were idle (it restarted) fail at once:
        # each is replaced by the pool, and the next one tried.
        why = "cannot be reached"
        for _ in range(self.pool.max_size + 1):
            try:
                conn = await self.pool.getconn(timeout=ANSWER_MARGIN_S)
            except PoolTimeout:
                self._fall_back("cannot be reached")
                return None
            refused = await self._begin_at(conn, position, statement)
            if refused is None:
                self._serving(failures)
                return conn
            why = refused
            await self.pool.putconn(conn)
            if not (conn.broken or conn.closed) or why == "does not answer":
                break
        self._fall_back(why)
        return None

    async def _begin_at(self, conn: Conn, position: str, statement: str) -> str | None:
        """Open the snapshot on `conn` once it has replayed `position`; else why not."""
        try:
            replayed = await replayed_within(conn, position, self.limits.lag_max_ms / 1000)
            if replayed:
                await within(conn, begin(conn, statement), ANSWER_MARGIN_S)
                return None
        except TimeoutError:
            return "does not answer"
        except (errors.OperationalError, errors.InterfaceError) as exc:
            return f"cannot be reached ({_reason(exc)})"
        except BaseException:
            await self.pool.putconn(conn)
            raise
        if replayed is None:
            return "is not a standby any more"
        return f"has not replayed the primary's writes within {self.limits.lag_max_ms} ms"

    def note_end(self, conn: Conn) -> None:
        """A read on `conn` has ended: one that failed there (the replica cancelled it in a
        conflict with recovery, or went away) sends the next reads to the primary."""
        if conn.broken or conn.closed or conn.info.transaction_status == _FAILED:
            self._failed("failed a read")

    def _serving(self, failures: int) -> None:
        self.reads += 1
        if self._failing and failures == self._failures:
            self._failing = False
            log.info("the replica serves reads again")

    def _fall_back(self, why: str) -> None:
        self.fallbacks += 1
        self._failed(why)

    def _failed(self, why: str) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + self.limits.primary_for_s
        if self._failing:
            return
        self._failing = True
        now = time.monotonic()
        if now - self._warned_at >= _WARNING_INTERVAL_S:
            self._warned_at = now
            log.warning("the replica %s: reads of history go to the primary meanwhile", why)
