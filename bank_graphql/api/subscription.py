"""Subscriptions: live feeds of ledger entries (LIVE.md). Each event is an edge whose cursor
resumes right after it: a feed position for `ledgerEntries`, the account's own key (the
cursors of `Account.transactions`) for `accountEntries`."""

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeVar

import strawberry
from cachetools import LRUCache

from bank_graphql.api import cursors
from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Info
from bank_graphql.api.errors import ApiError
from bank_graphql.api.types import Edge, LedgerEntry
from bank_graphql.ledger import EndReason, Entry, SubscriptionEnded
from bank_graphql.ledger.domain.rules import is_account_id

T = TypeVar("T")

_CODES = {
    EndReason.ACCOUNT_NOT_FOUND: ErrorCode.ACCOUNT_NOT_FOUND,
    EndReason.CURSOR_AHEAD: ErrorCode.BAD_USER_INPUT,
    EndReason.SUBSCRIBER_TOO_SLOW: ErrorCode.SUBSCRIBER_TOO_SLOW,
}


async def _coded(source: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """`source`, ending with an ApiError (its code) where the ledger ends a subscription."""
    try:
        async with aclosing(source):
            async for item in source:
                yield item
    except SubscriptionEnded as ended:
        raise ApiError(_CODES[ended.reason], str(ended)) from None


def _feed_cursor(position: int) -> str:
    return cursors.encode("f", position)


# One event object for one entry shown one way, whichever subscriber receives it: their
# results are then computed once (api/events.py).
_edges: LRUCache[tuple[str, Entry], Edge[LedgerEntry]] = LRUCache(4096)


def _edge(cursor: str, entry: Entry) -> Edge[LedgerEntry]:
    edge = _edges.get((cursor, entry))
    if edge is None:
        edge = _edges[(cursor, entry)] = Edge(cursor=cursor, node=LedgerEntry.from_row(entry))
    return edge


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Entries of one account as they commit, in the account's order "
        "(timestamp, entry id). `after`, a cursor from Account.transactions or from an "
        "earlier event of this field, resumes right after that entry: nothing skipped, "
        "nothing repeated. Without `after`: the entries committed after the subscription "
        "started."
    )
    async def account_entries(
        self, info: Info, account_id: strawberry.ID, after: str | None = None
    ) -> AsyncGenerator[Edge[LedgerEntry], None]:
        context = info.context
        context.live = True
        if context.ended:
            return
        key = None if after is None else cursors.entry_key(after)
        if not is_account_id(account_id):
            raise ApiError(ErrorCode.ACCOUNT_NOT_FOUND, "no account with this id")
        source = context.ledger.live.account_entries(context.principal, str(account_id), key)
        async with aclosing(_coded(source)) as events:
            async for entry in events:
                yield _edge(LedgerEntry.cursor(entry), entry)

    @strawberry.subscription(
        description="Every entry the caller may see, as they commit; each account's entries "
        "arrive in that account's order. `after`, a cursor from an earlier event of this "
        "field, resumes right after it: nothing skipped, nothing repeated. Without `after`: "
        "the entries committed after the subscription started."
    )
    async def ledger_entries(
        self, info: Info, after: str | None = None
    ) -> AsyncGenerator[Edge[LedgerEntry], None]:
        context = info.context
        context.live = True
        if context.ended:
            return
        position = None if after is None else cursors.feed_key(after)
        source = context.ledger.live.entries(context.principal, position)
        async with aclosing(_coded(source)) as events:
            async for item in events:
                yield _edge(_feed_cursor(item.position), item.entry)
