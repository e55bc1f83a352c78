"""Calling the SQL write functions: one statement per mutation, its own transaction.

Each call is retried, a bounded number of times, when it lost a lock, serialization or
deadlock race (the statement was rolled back), and when its connection turned out dead
before the statement was sent. A connection lost after sending is retried only for a
keyed request: its key makes the retry replay what may have committed. Without a key
nobody can tell whether it committed, and the caller hears that the database is
unavailable.
"""

import asyncio
import json
import logging
import random
import select
from dataclasses import dataclass
from typing import Any

from psycopg import errors, pq
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bank_graphql.ledger.storage.database import Conn, reconnects_max
from bank_graphql.ledger.storage.errors import translated

log = logging.getLogger(__name__)

ABORTED_BATCH = "BK001"
"""SQLSTATE of ledger_abort_batch: an atomic batch stopped at a refused item."""

_RACES = (errors.SerializationFailure, errors.DeadlockDetected, errors.LockNotAvailable)


class BatchAborted(Exception):
    def __init__(self, index: int, outcome: dict[str, Any]) -> None:
        super().__init__(f"batch item {index} refused")
        self.index = index
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class RetryLimits:
    races_max: int
    backoff_ms: int


def died_while_idle(conn: Conn) -> bool:
    """Did the server close this idle connection (a restart, a killed backend, a proxy)?

    An idle connection of the pool has nothing to read: the server speaks unasked only to
    say goodbye. A look at the socket tells, without a round trip.
    """
    pgconn = conn.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        return True
    idle = select.poll()  # not select(): descriptors past 1024 are common on a busy server
    idle.register(pgconn.socket, select.POLLIN)
    return bool(idle.poll(0))


def jsonb(document: dict[str, Any] | None) -> Jsonb | None:
    return None if document is None else Jsonb(document)


@translated
async def call(
    pool: AsyncConnectionPool[Conn],
    limits: RetryLimits,
    statement: str,
    params: tuple[Any, ...],
    *,
    keyed: bool,
) -> Any:
    """The one value `statement` returns, run as a transaction of its own."""
    races = reconnects = 0
    while True:
        sent = False
        try:
            async with pool.connection() as conn:
                if died_while_idle(conn):
                    await conn.close()  # so the pool replaces it
                    reconnects += 1
                    if reconnects >= reconnects_max(pool):
                        raise errors.OperationalError("no live connection to the database")
                    continue
                sent = True
                cursor = await conn.execute(statement, params)
                row = await cursor.fetchone()
                assert row is not None
                return row[0]
        except _RACES:
            races += 1
            if races >= limits.races_max:
                raise
            log.info("write lost a race, retrying (attempt %d)", races)
            await asyncio.sleep(limits.backoff_ms / 1000 * races * (1 + random.random()))  # noqa: S311
        except PoolTimeout:
            raise  # the pool waited its time for a connection already
        except errors.OperationalError:
            reconnects += 1
            if (sent and not keyed) or reconnects >= reconnects_max(pool):
                raise
            log.info("connection lost, retrying a keyed write on another")
        except errors.Error as exc:
            if exc.sqlstate == ABORTED_BATCH and exc.diag.message_detail:
                aborted = json.loads(exc.diag.message_detail)
                raise BatchAborted(aborted["index"], aborted["outcome"]) from None
            raise
