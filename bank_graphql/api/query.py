"""Queries: every one reads the request's single snapshot."""

import strawberry

from bank_graphql.api import cursors
from bank_graphql.api.access import Viewer
from bank_graphql.api.context import Info
from bank_graphql.api.errors import bad_input
from bank_graphql.api.scalars import Money
from bank_graphql.api.types import Account, Connection, Payment, Spender, connection, page_request
from bank_graphql.ledger.domain.rules import is_account_id, payment_number

TOP_SPENDERS_MAX = 1000


@strawberry.type
class Query:
    @strawberry.field(description="The credential behind this request.")
    def viewer(self, info: Info) -> Viewer:
        return Viewer.of(info.context.principal)

    @strawberry.field(
        description="The account with this id, or null when none exists (an account merged "
        "into another no longer exists)."
    )
    async def account(self, info: Info, id: strawberry.ID) -> Account | None:
        if not is_account_id(id):
            return None
        row = await info.context.account(str(id))
        return None if row is None else Account.from_row(row)

    @strawberry.field(description="All existing accounts, ordered by id ascending.")
    async def accounts(
        self, info: Info, first: int | None = 50, after: str | None = None
    ) -> Connection[Account]:
        after_key = None if after is None else cursors.account_key(after)
        request = page_request(first if first is not None else None, None, after_key, None)
        snapshot = await info.context.snapshot()
        page = await snapshot.accounts(request)
        return connection(page, Account.from_row, Account.cursor)

    @strawberry.field(
        description="A payment, looked up through the account that owns it now (after a "
        "merge, through the surviving account); null when either is unknown or they do not match."
    )
    async def payment(
        self, info: Info, account_id: strawberry.ID, id: strawberry.ID
    ) -> Payment | None:
        number = payment_number(str(id))
        if number is None or not is_account_id(account_id):
            return None
        snapshot = await info.context.snapshot()
        row = await snapshot.payment(str(account_id), number)
        return None if row is None else Payment.from_row(row)

    @strawberry.field(
        description="The accounts with the largest total outgoing money (transfers out and "
        "payments, never cashback), largest first, ties by id ascending. All accounts when "
        "fewer than `first` exist."
    )
    async def top_spenders(self, info: Info, first: int) -> list[Spender]:
        if not 0 <= first <= TOP_SPENDERS_MAX:
            raise bad_input(f"`first` must be between 0 and {TOP_SPENDERS_MAX}, got {first}")
        snapshot = await info.context.snapshot()
        return [
            Spender(account_id=strawberry.ID(s.account_id), outgoing=Money(s.outgoing))
            for s in await snapshot.top_spenders(first)
        ]
