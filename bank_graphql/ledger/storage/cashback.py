"""Settling due cashback for accounts nobody touches, and the sweeper that keeps doing it.

The sweeper also prunes old idempotency keys, in bounded batches, once per prune interval.
"""

import asyncio
import logging
from dataclasses import dataclass

from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from bank_graphql.ledger.domain.clock import ClockMode
from bank_graphql.ledger.storage import idempotency
from bank_graphql.ledger.storage.clock import read_now
from bank_graphql.ledger.storage.database import Conn, is_busy, is_unavailable

log = logging.getLogger(__name__)

_ANY_DUE = """
SELECT EXISTS (SELECT 1 FROM payments WHERE NOT settled AND cashback_due_at <= %s)
"""

_OLDEST_DUE = """
SELECT min(cashback_due_at) FROM payments WHERE NOT settled AND cashback_due_at <= %s
"""

# The owners of the oldest due payments, leaving out accounts this sweep could not settle.
_DUE_OWNERS = """
SELECT DISTINCT survivor_id FROM (
    SELECT o.survivor_id
    FROM payments p JOIN accounts o ON o.id = p.account_id
    WHERE NOT p.settled AND p.cashback_due_at <= %(horizon)s
      AND o.survivor_id <> ALL(%(skipped)s::text[])
    ORDER BY p.cashback_due_at, p.id
    LIMIT %(limit)s
) AS due
"""


@dataclass(frozen=True, slots=True)
class SweepLimits:
    batch_max: int = 200
    """Payments looked at per transaction: bounds how long account locks are held."""
    batches_max: int = 50
    """Transactions per sweep, so one sweep cannot run forever behind a huge backlog."""
    interval_s: float = 1.0
    key_retention_days: int = 7
    """Idempotency keys are kept at least this long (never less than 7 days)."""
    key_prune_interval_s: float = 3600.0
    key_prune_batch_max: int = 1000


async def any_due(conn: Conn, horizon: int) -> bool:
    cursor = await conn.execute(_ANY_DUE, (horizon,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def settle_due(conn: Conn, horizon: int, limits: SweepLimits) -> int:
    """Write every cashback due by `horizon`, in bounded batches. Returns accounts settled.

    `conn` is an idle autocommit connection; each batch is a transaction of its own. An
    account whose cashback cannot be written (a broken row) is logged and left out, so it
    never holds back the others; a busy or unreachable database is the caller's to handle.
    """
    settled = 0
    skipped: list[str] = []
    for _ in range(limits.batches_max):
        cursor = await conn.execute(
            _DUE_OWNERS, {"horizon": horizon, "limit": limits.batch_max, "skipped": skipped}
        )
        owners = [row[0] for row in await cursor.fetchall()]
        if not owners:
            break
        try:
            await _settle_owners(conn, owners, horizon)
            settled += len(owners)
        except Exception as exc:
            if is_busy(exc) or is_unavailable(exc):
                raise
            # Find the account at fault: the rest of its batch is settled one by one.
            for owner in owners:
                if await _settle_alone(conn, owner, horizon):
                    settled += 1
                else:
                    skipped.append(owner)
    return settled


async def _settle_owners(conn: Conn, owners: list[str], horizon: int) -> None:
    """One statement, its own transaction: ledger_settle_accounts in the SQL."""
    await conn.execute("SELECT ledger_settle_accounts(%s, %s)", (owners, horizon))


async def _settle_alone(conn: Conn, owner: str, horizon: int) -> bool:
    """Settle one account in a transaction of its own; False (logged) when it cannot be."""
    try:
        await _settle_owners(conn, [owner], horizon)
    except Exception as exc:
        if is_busy(exc) or is_unavailable(exc):
            raise
        log.exception("cannot credit the due cashback of account %r; left unpaid", owner)
        return False
    return True


class Sweeper:
    """Background task crediting due cashback of idle accounts, once per interval."""

    def __init__(
        self, pool: AsyncConnectionPool[Conn], clock: ClockMode, limits: SweepLimits
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._limits = limits
        self._task: asyncio.Task[None] | None = None
        self.lag_ms = 0
        """How long the oldest due cashback had waited when the last sweep began."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cashback-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def prune_keys(self) -> int:
        """Delete idempotency keys past retention, in bounded batches; returns how many."""
        pruned = 0
        async with self._pool.connection() as conn:
            for _ in range(self._limits.batches_max):
                batch = await idempotency.prune(
                    conn, self._limits.key_retention_days, self._limits.key_prune_batch_max
                )
                pruned += batch
                if batch < self._limits.key_prune_batch_max:
                    break
        return pruned

    async def sweep_once(self) -> int:
        async with self._pool.connection() as conn:
            horizon = await read_now(conn, self._clock)
            cursor = await conn.execute(_OLDEST_DUE, (horizon,))
            row = await cursor.fetchone()
            self.lag_ms = 0 if row is None or row[0] is None else horizon - row[0]
            return await settle_due(conn, horizon, self._limits)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            try:
                await self.sweep_once()
                if loop.time() >= next_prune:
                    next_prune = loop.time() + self._limits.key_prune_interval_s
                    await self.prune_keys()
            except errors.Error as exc:
                log.warning("background sweep failed, will retry: %s", exc)
            except Exception:
                # Whatever went wrong, the next sweep runs: a dead sweeper pays nobody.
                log.exception("background sweep failed, will retry")
            await asyncio.sleep(self._limits.interval_s)
