"""The API keys a server accepts, held in memory so that checking one costs no I/O.

A background task asks the database every `KeyRingLimits.poll_interval_s` (a quarter of a
second) for a fingerprint of the table (its row count and the sum of the rows' revisions,
which change with every committed change but a last-used time) and reloads the table when
it changed: a key issued or revoked anywhere is seen by every server process within that
time. A lookup that misses wakes the task early and waits for that reload, so a key issued
a moment ago works at once.

Last-used times are kept in memory and written by the same task every
`KeyRingLimits.last_used_write_interval_s` (5 s) in one statement: `last_used_at` is at
most that late (and a process killed without SIGTERM loses its last few seconds of them).
"""

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from bank_graphql.ledger.domain.access import Principal, Role
from bank_graphql.ledger.storage.credentials import key_hash, key_id_of, key_principal
from bank_graphql.ledger.storage.database import Conn

log = logging.getLogger(__name__)

POLL_GAP_MIN_S = 0.05
"""Misses wake the poller early, but no more often than this (a flood of bad keys costs
at most one small query per gap)."""

FRESH_LOOKUP_WAIT_S = 2.0
"""How long a missed lookup waits for a reload (the database answers, or it is down)."""

_FINGERPRINT = "SELECT count(*), coalesce(sum(revision), 0) FROM api_keys"
_LIVE = "SELECT id, role, accounts, hash, expires_at FROM api_keys WHERE revoked_at IS NULL"
_TOUCH = """
UPDATE api_keys AS k SET last_used_at = u.used_at
FROM unnest(%s::text[], %s::timestamptz[]) AS u (id, used_at)
WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.used_at)
"""


@dataclass(frozen=True, slots=True)
class KeyRingLimits:
    poll_interval_s: float = 0.25
    """Revocation reaches every server process within this (plus one small query)."""
    last_used_write_interval_s: float = 5.0
    """How late `last_used_at` may be."""


@dataclass(frozen=True, slots=True)
class _Live:
    key_id: str
    principal: Principal
    expires_at: float | None
    """Seconds since the epoch; None: never."""


class KeyRing:
    """Every unrevoked API key, by hash. `start()` loads them and starts the poller."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        limits: KeyRingLimits | None = None,
    ) -> None:
        limits = limits or KeyRingLimits()
        self._pool = pool
        self._poll_interval_s = max(limits.poll_interval_s, POLL_GAP_MIN_S)
        self._write_interval_s = limits.last_used_write_interval_s
        self._keys: dict[bytes, _Live] = {}
        self._fingerprint: tuple[int, int] | None = None
        self._used: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._next_poll = asyncio.Event()
        """Set when a poll that began after it was made has ended."""
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def lookup(self, token: str, *, touch: bool = True) -> Principal | None:
        """The principal of a valid key, else None (not a key, unknown, revoked, expired).
        No I/O; `touch` records the use for `last_used_at`."""
        if key_id_of(token) is None:
            return None
        live = self._keys.get(key_hash(token))
        if live is None:
            self._wake.set()  # perhaps issued since the last reload
            return None
        now = time.time()
        if live.expires_at is not None and live.expires_at <= now:
            return None
        if touch:
            self._used[live.key_id] = now
        return live.principal

    async def lookup_fresh(self, token: str) -> Principal | None:
        """`lookup`, and on a miss once more after a reload that began after the miss: a
        key issued a moment ago, anywhere, works on its first request. An unknown key is
        answered within a poll's time (one reload serves every miss waiting for it)."""
        principal = self.lookup(token)
        if principal is not None or key_id_of(token) is None or self._task is None:
            return principal
        reloaded = self._next_poll
        self._wake.set()
        with suppress(TimeoutError):
            async with asyncio.timeout(FRESH_LOOKUP_WAIT_S):
                await reloaded.wait()
        return self.lookup(token)

    async def start(self) -> None:
        await self.poll()
        self._task = asyncio.create_task(self._run(), name="key-ring")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.write_last_used()
        except Exception as exc:
            log.warning("could not write the keys' last-used times: %s", exc)

    async def poll(self) -> bool:
        """Reload the keys when the table changed; True when it did."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_FINGERPRINT)
            row = await cursor.fetchone()
            assert row is not None
            fingerprint = (int(row[0]), int(row[1]))
            if fingerprint == self._fingerprint:
                return False
            cursor = await conn.execute(_LIVE)
            rows = await cursor.fetchall()
        keys = {}
        for key_id, role, accounts, digest, expires_at in rows:
            expiry = None if expires_at is None else expires_at.timestamp()
            keys[bytes(digest)] = _Live(key_id, key_principal(key_id, Role(role), accounts), expiry)
        self._keys = keys
        self._fingerprint = fingerprint
        return True

    async def write_last_used(self) -> None:
        """Write the last-used times gathered since the last write, in one statement."""
        used, self._used = self._used, {}
        if not used:
            return
        ids = list(used)
        times = [datetime.fromtimestamp(used[i], UTC) for i in ids]
        try:
            async with self._pool.connection() as conn:
                await conn.execute(_TOUCH, (ids, times))
        except BaseException:
            for key_id, at in used.items():  # kept for the next write
                self._used[key_id] = max(at, self._used.get(key_id, at))
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_write = loop.time() + self._write_interval_s
        while True:
            self._wake.clear()
            polled, self._next_poll = self._next_poll, asyncio.Event()
            try:
                await self.poll()
                if loop.time() >= next_write:
                    next_write = loop.time() + self._write_interval_s
                    await self.write_last_used()
                if self._failing:
                    log.info("API keys are read from the database again")
                self._failing = False
            except Exception as exc:
                # The keys loaded last stay in force; the next poll tries again.
                if not self._failing:
                    log.warning("cannot read the API keys, will retry: %s", exc)
                self._failing = True
            polled.set()
            await asyncio.sleep(POLL_GAP_MIN_S)
            try:
                async with asyncio.timeout(self._poll_interval_s - POLL_GAP_MIN_S):
                    await self._wake.wait()
            except TimeoutError:
                pass
