"""Where a request's read snapshot is taken: after every cashback due by now is credited, on
the primary, or on the replica once it has caught up with the primary (storage/replica.py)."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TypeVar

from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from bank_graphql.ledger.domain.access import Principal
from bank_graphql.ledger.domain.clock import ClockMode
from bank_graphql.ledger.storage.cashback import SweepLimits, any_due, settle_due
from bank_graphql.ledger.storage.clock import read_now
from bank_graphql.ledger.storage.database import Conn, begin, end_snapshot, reconnects_max
from bank_graphql.ledger.storage.errors import translated
from bank_graphql.ledger.storage.reads import Snapshot
from bank_graphql.ledger.storage.replica import Replica, primary_position

T = TypeVar("T")

_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


async def _live_connection(
    pool: AsyncConnectionPool[Conn], first: Callable[[Conn], Awaitable[T]]
) -> tuple[Conn, T]:
    """A connection of `pool` that `first` ran on, and what it answered. A connection that
    died while idle in the pool fails at once: another is taken (the pool replaces the dead
    one in the background)."""
    for attempt in range(reconnects_max(pool)):
        conn = await pool.getconn()
        try:
            return conn, await first(conn)
        except errors.OperationalError:
            await pool.putconn(conn)
            if not conn.broken or attempt + 1 == reconnects_max(pool):
                raise
        except BaseException:
            await pool.putconn(conn)
            raise
    raise AssertionError("unreachable: the last attempt raises")


async def _now_and_due(clock: ClockMode, conn: Conn) -> tuple[int, bool]:
    now = await read_now(conn, clock)
    return now, await any_due(conn, now)


@translated
async def _settled_connection(
    pool: AsyncConnectionPool[Conn], clock: ClockMode, sweep_limits: SweepLimits
) -> tuple[Conn, int]:
    """An idle connection of the pool, taken after crediting every cashback due by now (in
    transactions of its own); and that now."""
    conn, (now, due) = await _live_connection(pool, partial(_now_and_due, clock))
    if due:
        try:
            await settle_due(conn, now, sweep_limits)
        except BaseException:
            await pool.putconn(conn)
            raise
    return conn, now


@translated
async def _snapshot_on(
    conn: Conn, pool: AsyncConnectionPool[Conn], replica: Replica | None
) -> tuple[Conn, AsyncConnectionPool[Conn]]:
    """A read-only snapshot, and the pool of its connection: on the replica when one is
    given and catches up with the primary behind `conn`, else on the primary. While it waits
    for the replica, no connection of the primary is held."""
    if replica is not None and replica.in_use():
        try:
            position = await primary_position(conn)
        finally:
            await pool.putconn(conn)
        on_replica = await replica.snapshot_at(position, _SNAPSHOT)
        if on_replica is not None:
            return on_replica, replica.pool
        conn, _ = await _live_connection(pool, partial(begin, statement=_SNAPSHOT))
        return conn, pool
    try:
        await begin(conn, _SNAPSHOT)
    except BaseException:
        await pool.putconn(conn)
        raise
    return conn, pool


@asynccontextmanager
async def settle_due_then_snapshot(
    pool: AsyncConnectionPool[Conn],
    clock: ClockMode,
    sweep_limits: SweepLimits,
    principal: Principal,
    replica: Replica | None = None,
) -> AsyncIterator[Snapshot]:
    """Credit every cashback due by now (a write, in transactions of its own), then hold one
    read-only snapshot of what exists for `principal` until exit: on `replica` when it has
    caught up with the primary."""
    primary, now = await _settled_connection(pool, clock, sweep_limits)
    conn, owner = await _snapshot_on(primary, pool, replica)
    try:
        yield Snapshot(conn, now, principal)
    finally:
        try:
            if replica is not None and owner is replica.pool:
                replica.note_end(conn)
            await end_snapshot(conn)
        finally:
            await owner.putconn(conn)
