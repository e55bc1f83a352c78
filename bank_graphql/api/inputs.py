"""Mutation inputs. Every one takes an optional `timestamp` and `idempotencyKey`."""

import strawberry

from bank_graphql.api.scalars import Money, Timestamp
from bank_graphql.ledger import TransferRequest


@strawberry.input
class CreateAccountInput:
    id: strawberry.ID
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None


@strawberry.input
class DepositInput:
    account_id: strawberry.ID
    amount: Money
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None


@strawberry.input
class TransferInput:
    source_account_id: strawberry.ID
    target_account_id: strawberry.ID
    amount: Money
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None

    def to_request(self) -> TransferRequest:
        return TransferRequest(
            source_id=str(self.source_account_id),
            target_id=str(self.target_account_id),
            amount=self.amount,
            timestamp=self.timestamp,
            idempotency_key=self.idempotency_key,
        )


@strawberry.input
class TransferBatchInput:
    transfers: list[TransferInput]
    atomic: bool = False


@strawberry.input
class PayInput:
    account_id: strawberry.ID
    amount: Money
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None


@strawberry.input(description="Merge `absorbedAccountId` into `accountId`.")
class MergeAccountsInput:
    account_id: strawberry.ID
    absorbed_account_id: strawberry.ID
    timestamp: Timestamp | None = None
    idempotency_key: str | None = None
