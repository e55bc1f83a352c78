"""Subscriptions: live feeds of ledger entries (LIVE.md). Each event is an edge whose cursor
resumes right after it: a feed position for `ledgerEntries`, the account's own key (the
cursors of `Account.transactions`) for `accountEntries`."""

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeVar

import strawberry

from bank_graphql.api import cursors
from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Info
from bank_graphql.api.errors import ApiError
from bank_graphql.api.types import Edge, LedgerEntry
from bank_graphql.ledger import EndReason, SubscriptionEnded
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
        key = None if after is None else cursors.entry_key(after)
        if not is_account_id(account_id):
            raise ApiError(ErrorCode.ACCOUNT_NOT_FOUND, f"no account with id {account_id!r}")
        source = context.ledger.live.account_entries(context.principal, str(account_id), key)
        async with aclosing(_coded(source)) as events:
            async for entry in events:
                yield Edge(cursor=LedgerEntry.cursor(entry), node=LedgerEntry.from_row(entry))

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
        position = None if after is None else cursors.feed_key(after)
        source = context.ledger.live.entries(context.principal, position)
        async with aclosing(_coded(source)) as events:
            async for item in events:
                node = LedgerEntry.from_row(item.entry)
                yield Edge(cursor=_feed_cursor(item.position), node=node)
