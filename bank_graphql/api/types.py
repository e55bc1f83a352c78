"""The GraphQL object types, each built from a ledger row in one `from_row`."""

from collections.abc import Callable
from enum import Enum
from typing import Annotated, Generic, Self, TypeVar

import strawberry

from bank_graphql.api import cursors
from bank_graphql.api.context import Info
from bank_graphql.api.errors import bad_input
from bank_graphql.api.scalars import Money, Timestamp
from bank_graphql.ledger import EntryKind as LedgerEntryKind
from bank_graphql.ledger import Page, PageRequest
from bank_graphql.ledger.domain import models
from bank_graphql.ledger.domain.rules import payment_id

PAGE_SIZE_MAX = 100
PAGE_SIZE_DEFAULT = 50

EntryKind = strawberry.enum(LedgerEntryKind, name="EntryKind")


@strawberry.enum
class PaymentStatus(Enum):
    IN_PROGRESS = "IN_PROGRESS"
    CASHBACK_RECEIVED = "CASHBACK_RECEIVED"


T = TypeVar("T")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @strawberry.field
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]


R = TypeVar("R")


def connection(page: Page[R], node: Callable[[R], T], cursor: Callable[[R], str]) -> Connection[T]:
    edges = [Edge(cursor=cursor(row), node=node(row)) for row in page.rows]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )


def page_request(
    first: int | None,
    last: int | None,
    after: tuple[int | str, ...] | None,
    before: tuple[int | str, ...] | None,
) -> PageRequest:
    for name, size in (("first", first), ("last", last)):
        if size is not None and not 0 <= size <= PAGE_SIZE_MAX:
            raise bad_input(f"`{name}` must be between 0 and {PAGE_SIZE_MAX}, got {size}")
    if first is None and last is None:
        first = PAGE_SIZE_DEFAULT
    return PageRequest(first=first, last=last, after=after, before=before)


def _optional_id(value: str | None) -> strawberry.ID | None:
    return None if value is None else strawberry.ID(value)


@strawberry.type
class LedgerEntry:
    """One append-only ledger entry. Entries are never updated or deleted."""

    # Every field resolves from the entry alone, never from the context: subscribers of
    # the same document share the result of one event (api/events.py).

    id: strawberry.ID
    account_id: strawberry.ID
    timestamp: Timestamp
    kind: EntryKind  # type: ignore[valid-type]
    amount: Money = strawberry.field(
        description="Never negative; `kind` says whether money came in or went out. "
        "Only a merge of an empty account writes 0."
    )
    balance_after: Money = strawberry.field(
        description="The account's balance right after this entry."
    )
    counterparty_id: strawberry.ID | None = strawberry.field(
        description="The other account of a transfer or a merge."
    )
    payment_id: strawberry.ID | None = strawberry.field(
        description="The payment that a PAYMENT or CASHBACK entry belongs to."
    )
    actor: str | None = strawberry.field(
        description="Who caused this entry: `key:<key id>`, `jwt:<subject>`, `anonymous`, "
        "or `system` for cashback the ledger credited itself. Null for entries written "
        "before access control existed."
    )

    @classmethod
    def from_row(cls, entry: models.Entry) -> Self:
        return cls(
            id=strawberry.ID(str(entry.id)),
            account_id=strawberry.ID(entry.account_id),
            timestamp=Timestamp(entry.ts),
            kind=entry.kind,
            amount=Money(entry.amount),
            balance_after=Money(entry.balance_after),
            counterparty_id=_optional_id(entry.counterparty_id),
            payment_id=_optional_id(
                None if entry.payment_id is None else payment_id(entry.payment_id)
            ),
            actor=entry.actor,
        )

    @staticmethod
    def cursor(entry: models.Entry) -> str:
        return cursors.encode("e", entry.ts, entry.id)


@strawberry.type
class Payment:
    id: strawberry.ID = strawberry.field(
        description="payment1, payment2, ... numbered across all accounts in the order they "
        "succeeded."
    )
    account_id: strawberry.ID = strawberry.field(
        description="The account that owns the payment now (the surviving account after a merge)."
    )
    timestamp: Timestamp
    amount: Money
    cashback: Money = strawberry.field(description="2% of the amount, rounded down.")
    cashback_due_at: Timestamp = strawberry.field(description="timestamp + 86400000 (24 hours).")

    @strawberry.field(
        description="CASHBACK_RECEIVED once `at` (default: now) has reached cashbackDueAt."
    )
    async def status(self, info: Info, at: Timestamp | None = None) -> PaymentStatus:
        if at is None:
            at = Timestamp((await info.context.snapshot()).now)
        if at >= self.cashback_due_at:
            return PaymentStatus.CASHBACK_RECEIVED
        return PaymentStatus.IN_PROGRESS

    @classmethod
    def from_row(cls, payment: models.Payment) -> Self:
        return cls(
            id=strawberry.ID(payment_id(payment.id)),
            account_id=strawberry.ID(payment.owner_id),
            timestamp=Timestamp(payment.ts),
            amount=Money(payment.amount),
            cashback=Money(payment.cashback),
            cashback_due_at=Timestamp(payment.cashback_due_at),
        )

    @staticmethod
    def cursor(payment: models.Payment) -> str:
        return cursors.encode("p", payment.id)


@strawberry.type
class Account:
    id: strawberry.ID
    created_at: Timestamp
    outgoing: Money = strawberry.field(
        description="Total money sent out by transfers and payments, including that of accounts "
        "merged into this one. Cashback never counts."
    )

    @strawberry.field(
        description="The balance after every entry at or before `at` (default: now), counting "
        "cashback due by then. Null when the account did not exist yet at `at`."
    )
    async def balance(self, info: Info, at: Timestamp | None = None) -> Money | None:
        balance = await info.context.balance(self.id, at)
        return None if balance is None else Money(balance)

    @strawberry.field(
        description="This account's ledger, oldest first: ordered by (timestamp, entry id). "
        "`from` and `to` bound timestamps, both inclusive."
    )
    async def transactions(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        from_: Annotated[Timestamp | None, strawberry.argument(name="from")] = None,
        to: Timestamp | None = None,
    ) -> Connection[LedgerEntry]:
        request = page_request(
            first,
            last,
            None if after is None else cursors.entry_key(after),
            None if before is None else cursors.entry_key(before),
        )
        snapshot = await info.context.snapshot()
        page = await snapshot.entries(self.id, request, from_, to)
        return connection(page, LedgerEntry.from_row, LedgerEntry.cursor)

    @strawberry.field(
        description="Payments made from this account (and from accounts merged into it), "
        "oldest first."
    )
    async def payments(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Payment]:
        request = page_request(
            first, None, None if after is None else cursors.payment_key(after), None
        )
        snapshot = await info.context.snapshot()
        page = await snapshot.payments(self.id, request)
        return connection(page, Payment.from_row, Payment.cursor)

    @classmethod
    def from_row(cls, account: models.Account) -> Self:
        return cls(
            id=strawberry.ID(account.id),
            created_at=Timestamp(account.created_at),
            outgoing=Money(account.outgoing),
        )

    @staticmethod
    def cursor(account: models.Account) -> str:
        return cursors.encode("a", account.id)


@strawberry.type
class Spender:
    account_id: strawberry.ID
    outgoing: Money
