"""Mutations: thin resolvers handing inputs to the ledger and its outcome to a payload.

Each resolver first ends the request's read snapshot, so payload fields read after the
write see its effect (mutations of one request run one after another).
"""

import strawberry

from bank_graphql.api.context import Info
from bank_graphql.api.inputs import (
    CreateAccountInput,
    DepositInput,
    MergeAccountsInput,
    PayInput,
    TransferBatchInput,
    TransferInput,
)
from bank_graphql.api.payloads import (
    CreateAccountPayload,
    DepositPayload,
    MergeAccountsPayload,
    PayPayload,
    TransferBatchPayload,
    TransferPayload,
)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_account(self, info: Info, input: CreateAccountInput) -> CreateAccountPayload:
        await info.context.end_reads()
        outcome = await info.context.ledger.create_account(
            info.context.principal, str(input.id), input.timestamp, input.idempotency_key
        )
        return CreateAccountPayload.from_outcome(outcome)

    @strawberry.mutation
    async def deposit(self, info: Info, input: DepositInput) -> DepositPayload:
        await info.context.end_reads()
        outcome = await info.context.ledger.deposit(
            info.context.principal,
            str(input.account_id),
            input.amount,
            input.timestamp,
            input.idempotency_key,
        )
        return DepositPayload.from_outcome(outcome)

    @strawberry.mutation
    async def transfer(self, info: Info, input: TransferInput) -> TransferPayload:
        await info.context.end_reads()
        outcome = await info.context.ledger.transfer(info.context.principal, input.to_request())
        return TransferPayload.from_outcome(outcome, info.context.principal.sees)

    @strawberry.mutation(
        description="Many transfers in one request and one transaction, applied in order. "
        "Not atomic (default): each item commits or is refused on its own. Atomic: all "
        "commit or none does; the refused item reports why, the others BATCH_ABORTED."
    )
    async def transfer_batch(self, info: Info, input: TransferBatchInput) -> TransferBatchPayload:
        await info.context.end_reads()
        outcome = await info.context.ledger.transfer_batch(
            info.context.principal,
            [item.to_request() for item in input.transfers],
            atomic=input.atomic,
        )
        return TransferBatchPayload.from_outcome(outcome, info.context.principal.sees)

    @strawberry.mutation
    async def pay(self, info: Info, input: PayInput) -> PayPayload:
        await info.context.end_reads()
        outcome = await info.context.ledger.pay(
            info.context.principal,
            str(input.account_id),
            input.amount,
            input.timestamp,
            input.idempotency_key,
        )
        return PayPayload.from_outcome(outcome)

    @strawberry.mutation(description="Merge `absorbedAccountId` into `accountId`.")
    async def merge_accounts(self, info: Info, input: MergeAccountsInput) -> MergeAccountsPayload:
        await info.context.end_reads()
        outcome = await info.context.ledger.merge_accounts(
            info.context.principal,
            str(input.account_id),
            str(input.absorbed_account_id),
            input.timestamp,
            input.idempotency_key,
        )
        return MergeAccountsPayload.from_outcome(outcome)
