"""What keeps the live feed moving in each process: a sequencer that asks the database to
give positions to new entries, and one listener connection (outside the pool: psycopg
cannot run queries on a connection waiting for notifications) whose NOTIFY wakes the reader.
A notification is only a hint; the reader also wakes on its own now and then.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from psycopg import AsyncConnection, errors

from bank_graphql.ledger.domain.errors import LedgerError
from bank_graphql.ledger.domain.live import LiveLimits
from bank_graphql.ledger.storage.feed import FeedReads

log = logging.getLogger(__name__)

CHANNEL = "bank_feed"
_RETRY_S = 1.0


async def sequence_forever(reads: FeedReads, limits: LiveLimits, wake: asyncio.Event) -> None:
    """Give positions to new entries every `sequence_interval_s` (at once again after a full
    batch); wake the local reader when any got one."""
    while True:
        try:
            added = await reads.sequence(limits.sequence_rows)
        except LedgerError as exc:
            log.warning("live feed: sequencing failed, will retry: %s", exc)
            await asyncio.sleep(_RETRY_S)
            continue
        except Exception:
            # Whatever went wrong, the next round runs: a dead sequencer stops every feed.
            log.exception("live feed: sequencing failed, will retry")
            await asyncio.sleep(_RETRY_S)
            continue
        if added:
            wake.set()
        if added < limits.sequence_rows:
            await asyncio.sleep(limits.sequence_interval_s)


async def listen_forever(database_url: str, wake: asyncio.Event) -> None:
    """LISTEN on a connection of its own; every notification (and every reconnect, after
    which some may have been missed) wakes the reader."""
    while True:
        try:
            conn = await AsyncConnection.connect(
                database_url, autocommit=True, application_name="bank-graphql-listener"
            )
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                wake.set()
                async for _ in conn.notifies():
                    wake.set()
        except (errors.Error, OSError) as exc:
            log.warning("live feed: listener connection lost, will reconnect: %s", exc)
        await asyncio.sleep(_RETRY_S)


async def read_forever(
    catch_up: Callable[[], Awaitable[None]], limits: LiveLimits, wake: asyncio.Event
) -> None:
    """Run `catch_up` whenever woken, and every `wake_interval_s` regardless."""
    while True:
        try:
            async with asyncio.timeout(limits.wake_interval_s):
                await wake.wait()
        except TimeoutError:
            pass
        wake.clear()
        try:
            await catch_up()
        except LedgerError as exc:
            log.warning("live feed: reading failed, will retry: %s", exc)
            await asyncio.sleep(_RETRY_S)
        except Exception:
            log.exception("live feed: reading failed, will retry")
            await asyncio.sleep(_RETRY_S)
