"""Mutations: thin resolvers handing inputs to the ledger and its outcome to a payload."""

import strawberry

from bank_graphql.api.context import Info
from bank_graphql.api.errors import ApiError, ErrorCode
from bank_graphql.api.inputs import (
    CreateAccountInput,
    DepositInput,
    MergeAccountsInput,
    PayInput,
    TransferInput,
)
from bank_graphql.api.payloads import (
    CreateAccountPayload,
    DepositPayload,
    MergeAccountsPayload,
    PayPayload,
    TransferPayload,
)


def _refuse_idempotency_key(key: str | None) -> None:
    if key is not None:
        raise ApiError(ErrorCode.NOT_IMPLEMENTED, "idempotencyKey is not implemented yet")


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_account(self, info: Info, input: CreateAccountInput) -> CreateAccountPayload:
        _refuse_idempotency_key(input.idempotency_key)
        await info.context.end_reads()
        outcome = await info.context.ledger.create_account(str(input.id), input.timestamp)
        return CreateAccountPayload.from_outcome(outcome)

    @strawberry.mutation
    async def deposit(self, info: Info, input: DepositInput) -> DepositPayload:
        _refuse_idempotency_key(input.idempotency_key)
        await info.context.end_reads()
        outcome = await info.context.ledger.deposit(
            str(input.account_id), input.amount, input.timestamp
        )
        return DepositPayload.from_outcome(outcome)

    @strawberry.mutation
    async def transfer(self, info: Info, input: TransferInput) -> TransferPayload:
        _refuse_idempotency_key(input.idempotency_key)
        await info.context.end_reads()
        outcome = await info.context.ledger.transfer(
            str(input.source_account_id),
            str(input.target_account_id),
            input.amount,
            input.timestamp,
        )
        return TransferPayload.from_outcome(outcome)

    @strawberry.mutation
    async def pay(self, info: Info, input: PayInput) -> PayPayload:
        _refuse_idempotency_key(input.idempotency_key)
        await info.context.end_reads()
        outcome = await info.context.ledger.pay(
            str(input.account_id), input.amount, input.timestamp
        )
        return PayPayload.from_outcome(outcome)

    @strawberry.mutation
    async def merge_accounts(
        self,
        info: Info,  # noqa: ARG002
        input: MergeAccountsInput,  # noqa: ARG002
    ) -> MergeAccountsPayload:
        raise ApiError(ErrorCode.NOT_IMPLEMENTED, "mergeAccounts is not implemented yet")
