"""Live feeds in one process: one reader fans every new entry out to the subscribers here.

The database work per commit does not grow with the number of subscribers: the reader reads
each position once, and a subscriber only reads the database to catch up with history.

A subscriber catches up from the database, then registers and receives what the reader
offers. Registering happens at a position the reader has offered up to; the history read
stops there, so nothing is skipped or repeated at the seam. Each subscriber's buffer is
bounded; when it fills, the subscription ends with SUBSCRIBER_TOO_SLOW.
"""

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import aclosing, suppress

from psycopg_pool import AsyncConnectionPool

from bank_graphql.ledger.domain.access import Principal
from bank_graphql.ledger.domain.live import (
    FeedItem,
    LiveLimits,
    account_key,
    closes_account,
    cursor_ahead,
    not_found,
    too_slow,
)
from bank_graphql.ledger.domain.models import Entry
from bank_graphql.ledger.storage.database import Conn
from bank_graphql.ledger.storage.feed import FeedReads
from bank_graphql.ledger.storage.feed_pump import (
    listen_forever,
    listening,
    read_forever,
    sequence_forever,
)


class _Subscriber:
    __slots__ = ("buffer_max", "drained", "items", "overflowed", "principal", "ready")

    def __init__(self, principal: Principal, buffer_max: int) -> None:
        self.principal = principal
        self.buffer_max = buffer_max
        self.items: deque[FeedItem] = deque()
        self.ready = asyncio.Event()
        self.drained = asyncio.Event()
        self.overflowed = False

    def offer(self, item: FeedItem) -> None:
        if not self.overflowed:
            self.items.append(item)
            self.ready.set()

    def behind(self) -> bool:
        return len(self.items) > self.buffer_max

    async def caught_up(self) -> None:
        while self.behind() and not self.overflowed:
            self.drained.clear()
            await self.drained.wait()

    def end_too_slow(self) -> None:
        self.overflowed = True
        self.items.clear()
        self.ready.set()

    async def next(self) -> FeedItem:
        while not self.items and not self.overflowed:
            self.ready.clear()
            await self.ready.wait()
        if self.overflowed:
            raise too_slow(self.buffer_max)
        item = self.items.popleft()
        if not self.behind():
            self.drained.set()
        return item


class LiveFeed:
    def __init__(
        self, pool: AsyncConnectionPool[Conn], database_url: str, limits: LiveLimits
    ) -> None:
        self._reads = FeedReads(pool)
        self._url = database_url
        self._limits = limits
        self._position = 0
        """Every entry up to here has been offered to the subscribers registered then."""
        self.ended_too_slow = 0
        """Subscriptions this process has ended as SUBSCRIBER_TOO_SLOW."""
        self._all: set[_Subscriber] = set()
        self._by_account: dict[str, set[_Subscriber]] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def subscribers(self) -> int:
        return len(self._all) + sum(len(s) for s in self._by_account.values())

    async def start(self) -> None:
        listener = await listening(self._url)
        try:
            self._position = await self._reads.end()
        except BaseException:
            await listener.close()
            raise
        loops = [
            listen_forever(self._url, self._wake, listener),
            read_forever(self._catch_up, self._limits, self._wake),
            sequence_forever(self._reads, self._limits, self._wake),
        ]
        self._tasks = [asyncio.create_task(loop, name="live-feed") for loop in loops]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _catch_up(self) -> None:
        end = await self._reads.end()
        while self._position < end:
            if not self._all and not self._by_account:
                self._position = end  # nobody to offer them to
                return
            page = await self._reads.page(None, self._position, end, self._limits.page_rows)
            self._offer(*page)
            await self._wait_for_laggards()

    async def _wait_for_laggards(self) -> None:
        """Give subscribers past their buffer a moment to drain it (one big commit comes in
        one burst); end those that do not as too slow."""
        laggards = [s for s in self._everyone() if s.behind()]
        if not laggards:
            return
        with suppress(TimeoutError):
            async with asyncio.timeout(self._limits.slow_grace_s):
                for subscriber in laggards:
                    await subscriber.caught_up()
        for subscriber in laggards:
            if subscriber.behind():
                subscriber.end_too_slow()
                self.ended_too_slow += 1

    def _everyone(self) -> list[_Subscriber]:
        return [*self._all, *(s for group in self._by_account.values() for s in group)]

    def _offer(self, items: list[FeedItem], reached: int) -> None:
        # No await in here: a subscriber registers either before an item is offered to
        # everyone, or after the position has moved past it.
        for item in items:
            account_id = item.entry.account_id
            for subscriber in self._all:
                if subscriber.principal.sees(account_id):
                    subscriber.offer(item)
            for subscriber in self._by_account.get(account_id, ()):
                subscriber.offer(item)
        self._position = reached

    async def entries(
        self, principal: Principal, after: int | None
    ) -> AsyncGenerator[FeedItem, None]:
        """Every entry `principal` sees after position `after` (None: from now on)."""
        rows, scope = self._limits.page_rows, principal.scope
        if after is not None and after > await self._reads.end():
            raise cursor_ahead(after)
        if after is not None:  # most of the history, before a buffer can fill
            while (end := await self._reads.end()) - after > rows:
                items, after = await self._reads.page(scope, after, end, rows)
                for item in items:
                    yield _seen(principal, item)
        subscriber = _Subscriber(principal, self._limits.buffer_max)
        self._all.add(subscriber)
        try:
            start = self._position
            # From now on: not what had committed when the subscription started, even if
            # it gets its position only later.
            seen_before = None if after is not None else await self._reads.snapshot()
            after = start if after is None else after
            while after < start:
                items, after = await self._reads.page(scope, after, start, rows)
                for item in items:
                    yield _seen(principal, item)
            while True:
                item = await subscriber.next()
                if item.position > after:
                    after = item.position
                    if seen_before is None or not seen_before.saw(item.xid):
                        yield _seen(principal, item)
        finally:
            self._all.discard(subscriber)

    async def account_entries(
        self, principal: Principal, account_id: str, after: tuple[int, int] | None
    ) -> AsyncGenerator[Entry, None]:
        """The account's entries after key `after` (timestamp, id; None: from now on)."""
        if not principal.sees(account_id) or not await self._reads.account_open(account_id):
            raise not_found(account_id)
        if after is not None:  # most of the history, before a buffer can fill
            async with aclosing(self._account_history(principal, account_id, after)) as old:
                async for entry in old:
                    after = account_key(entry)
                    yield entry
        subscriber = _Subscriber(principal, self._limits.buffer_max)
        self._by_account.setdefault(account_id, set()).add(subscriber)
        try:
            if after is None:
                after = await self._reads.account_last_key(account_id)
            async with aclosing(self._account_history(principal, account_id, after)) as old:
                async for entry in old:
                    after = account_key(entry)
                    yield entry
            while True:
                entry = (await subscriber.next()).entry
                if account_key(entry) > after:
                    after = account_key(entry)
                    yield principal.shown(entry)
                    if closes_account(entry, account_id):
                        raise not_found(account_id)
        finally:
            self._drop(account_id, subscriber)

    async def _account_history(
        self, principal: Principal, account_id: str, after: tuple[int, int]
    ) -> AsyncGenerator[Entry, None]:
        rows = self._limits.page_rows
        while True:
            page = await self._reads.account_page(account_id, after, rows)
            for entry in page:
                yield principal.shown(entry)
                if closes_account(entry, account_id):
                    raise not_found(account_id)
            if len(page) < rows:
                return
            after = account_key(page[-1])

    def _drop(self, account_id: str, subscriber: _Subscriber) -> None:
        subscribers = self._by_account.get(account_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._by_account[account_id]


def _seen(principal: Principal, item: FeedItem) -> FeedItem:
    entry = principal.shown(item.entry)
    return item if entry is item.entry else FeedItem(item.position, entry, item.xid)
