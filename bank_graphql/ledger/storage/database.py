"""Connections to PostgreSQL: the pool every request shares, retries and health checks.

The schema and its versions: storage/migrations.py."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import orjson
from psycopg import AsyncConnection, AsyncCursor, Connection, errors, pq, sql
from psycopg.abc import Params
from psycopg.errors import Diagnostic
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

Conn = AsyncConnection[TupleRow]
Cursor = AsyncCursor[TupleRow]
T = TypeVar("T")

log = logging.getLogger(__name__)

ANSWER_MARGIN_S = 0.5
"""How long past its own deadline a server that may stop answering is waited for."""


@dataclass(frozen=True, slots=True)
class PoolLimits:
    min_size: int = 4
    max_size: int = 16
    pool_timeout_s: float = 10.0
    """How long a request waits for a free connection before it is answered with an error."""
    statement_timeout_ms: int = 10_000
    lock_timeout_ms: int = 2_000
    idle_in_transaction_timeout_ms: int = 60_000
    answer_timeout: bool = False
    """Each statement is given its statement_timeout plus half a second to be answered,
    counted here (`PooledConnection.answer_timeout_s`): for a replica, which may stop
    answering altogether. Not behind a transaction pooler."""
    transaction_pooler: bool = False
    """The URL reaches PostgreSQL through a pooler in transaction mode (PgBouncer's
    `pool_mode = transaction`), whose server sessions are shared: no statement is prepared,
    no startup option is sent, and every transaction sets its own timeouts inside itself."""

    def timeouts(self) -> tuple[str, str, str]:
        """statement_timeout, lock_timeout, idle_in_transaction_session_timeout (ms)."""
        return (
            str(self.statement_timeout_ms),
            str(self.lock_timeout_ms),
            str(self.idle_in_transaction_timeout_ms),
        )


_SET_LOCAL_TIMEOUTS = (
    "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true),"
    " set_config('idle_in_transaction_session_timeout', %s, true)"
)


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


class PooledConnection(AsyncConnection[TupleRow]):
    """A connection of the pool. Behind a transaction pooler it carries the timeouts that
    every transaction must set inside itself (a session setting would stay on a server
    session that other clients get next): a statement run on its own is sent with them, in
    one round trip, since statements sent before one Sync are one implicit transaction; a
    transaction opened by `begin` sets them first thing.

    With `answer_timeout_s`, a statement the server has not answered in that time closes the
    connection and raises OperationalError: for a server that may stop answering altogether
    (a replica), whose own statement_timeout then never fires."""

    local_timeouts: tuple[str, str, str] | None = None
    answer_timeout_s: float | None = None

    # Narrower than psycopg's overloads: this code sends no template strings.
    async def execute(  # type: ignore[override]
        self,
        query: str | bytes | sql.SQL | sql.Composed,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool = False,
    ) -> Cursor:
        if self.answer_timeout_s is not None:
            run = super().execute(query, params, prepare=prepare, binary=binary)
            try:
                return await within(self, run, self.answer_timeout_s)
            except TimeoutError:
                raise errors.OperationalError("the server stopped answering") from None
        alone = (
            self.local_timeouts is not None
            and self.pgconn.pipeline_status == pq.PipelineStatus.OFF
            and self.pgconn.transaction_status == pq.TransactionStatus.IDLE
        )
        if not alone:
            return await super().execute(query, params, prepare=prepare, binary=binary)
        async with self.pipeline():
            await super().execute(_SET_LOCAL_TIMEOUTS, self.local_timeouts)
            cursor = await super().execute(query, params, prepare=prepare, binary=binary)
        return cursor


async def begin(conn: Conn, statement: str = "BEGIN") -> None:
    """Open a transaction on `conn` (in autocommit); behind a transaction pooler with its
    timeouts set inside it, in the same round trip."""
    if not (isinstance(conn, PooledConnection) and conn.local_timeouts is not None):
        await conn.execute(statement)
        return
    async with conn.pipeline():
        await conn.execute(statement)
        await conn.execute(_SET_LOCAL_TIMEOUTS, conn.local_timeouts)


async def end_snapshot(conn: Conn) -> None:
    """Roll back a read's transaction. A connection closed meanwhile (a read cancelled while
    a sibling field failed closes it) has nothing to roll back: the pool replaces it, and
    the error that ended the read is the one the caller hears."""
    if conn.broken or conn.closed:
        return
    with contextlib.suppress(errors.OperationalError):
        await conn.execute("ROLLBACK")


def _log_notice(notice: Diagnostic) -> None:
    """The SQL functions' warnings (RAISE WARNING) go to the server's log."""
    if notice.severity_nonlocalized == "WARNING":
        log.warning("%s", notice.message_primary)


async def _configure(limits: PoolLimits, conn: PooledConnection) -> None:
    conn.add_notice_handler(_log_notice)
    # Every write answers with a JSON outcome document: read with the quicker parser.
    set_json_loads(orjson.loads, conn)
    if limits.transaction_pooler:
        conn.local_timeouts = limits.timeouts()
    if limits.answer_timeout:
        conn.answer_timeout_s = limits.statement_timeout_ms / 1000 + ANSWER_MARGIN_S


def _connection_options(limits: PoolLimits) -> dict[str, Any]:
    """What each of the pool's connections is opened with."""
    options: dict[str, Any] = {"application_name": "bank-graphql", "autocommit": True}
    if limits.transaction_pooler:
        # A statement prepared on one server session is unknown to the next (PgBouncer
        # 1.18 does not track them), and PgBouncer refuses the `options` parameter.
        return {**options, "prepare_threshold": None}
    statement, lock, idle = limits.timeouts()
    options["options"] = (
        f"-c statement_timeout={statement} -c lock_timeout={lock}"
        f" -c idle_in_transaction_session_timeout={idle}"
    )
    return options


async def open_pool(database_url: str, limits: PoolLimits) -> AsyncConnectionPool[Conn]:
    """Open the pool and wait for its first connection, so a bad URL fails at start."""
    pool: AsyncConnectionPool[PooledConnection] = AsyncConnectionPool(
        database_url,
        connection_class=PooledConnection,
        min_size=limits.min_size,
        max_size=limits.max_size,
        timeout=limits.pool_timeout_s,
        # Autocommit: writes open their transaction explicitly, reads open a snapshot.
        kwargs=_connection_options(limits),
        # No `check`: psycopg_pool backs off for seconds after each dead connection it
        # checks. The ledger instead retries on another connection when one turns out dead
        # at first contact (see Ledger.snapshot and Ledger._in_transaction).
        open=False,
        configure=partial(_configure, limits),
        name="bank-graphql",
    )
    await pool.open(wait=True, timeout=limits.pool_timeout_s)
    return cast("AsyncConnectionPool[Conn]", pool)


@asynccontextmanager
async def one_connection(database_url: str) -> AsyncIterator[Conn]:
    """One connection, set up as the pool's are, for a command's single piece of work."""
    pool = await open_pool(database_url, PoolLimits(min_size=1, max_size=1))
    try:
        async with pool.connection() as conn:
            yield conn
    finally:
        await pool.close()


def ensure_database(server_url: str, name: str) -> None:
    """Create database `name` on the server at `server_url` unless it exists."""
    with Connection.connect(server_url, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@dataclass(frozen=True, slots=True)
class DatabaseIdentity:
    """Which database a URL reaches, the same through a pooler as straight."""

    name: str
    server_started: str
    """When its server started: two servers may hold databases of one name."""
    system: str
    """Its cluster's system identifier, which a streaming replica shares."""
    standby: bool
    """In recovery: it takes no writes."""


_IDENTITY = """
SELECT current_database(), pg_postmaster_start_time()::text,
       (SELECT system_identifier FROM pg_control_system())::text, pg_is_in_recovery()
"""


def database_identity(database_url: str, limits: PoolLimits) -> DatabaseIdentity:
    """Which database `database_url` reaches, through a connection opened as the pool would
    open it; raises psycopg.Error, as the server refuses it, when it cannot."""
    options = _connection_options(limits)
    with Connection.connect(database_url, connect_timeout=10, **options) as conn:
        row = conn.execute(_IDENTITY).fetchone()
    assert row is not None
    return DatabaseIdentity(str(row[0]), str(row[1]), str(row[2]), bool(row[3]))


# Statement or lock timeouts and lost races: the database is up but could not finish in time.
# A read's later statements on a snapshot that one of them failed fail in turn: they are
# answered as that first failure was.
_BUSY = (
    errors.QueryCanceled,
    errors.LockNotAvailable,
    errors.SerializationFailure,
    errors.DeadlockDetected,
    errors.InFailedSqlTransaction,
)


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, _BUSY)


def is_unavailable(exc: BaseException) -> bool:
    """Is `exc` the database being out of reach (connection lost, pool exhausted)?"""
    if is_busy(exc):
        return False
    return isinstance(exc, (errors.OperationalError, errors.InterfaceError, PoolTimeout))


def reconnects_max(pool: AsyncConnectionPool[Conn]) -> int:
    """Connections to try in a row when each turns out dead: all the pool may hold."""
    return pool.max_size + 1


async def ping(pool: AsyncConnectionPool[Conn], timeout_s: float) -> bool:
    """Does the database answer within `timeout_s`?"""
    try:
        async with asyncio.timeout(timeout_s):
            for attempt in range(reconnects_max(pool)):
                async with pool.connection(timeout_s) as conn:
                    try:
                        await conn.execute("SELECT 1")
                        return True
                    except errors.OperationalError:
                        if not conn.broken or attempt + 1 == reconnects_max(pool):
                            raise
    except (errors.Error, PoolTimeout, TimeoutError):
        return False
    return False
