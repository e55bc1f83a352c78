"""Mutation payloads: what a mutation did, or the `UserError`s saying why it did nothing."""

from collections.abc import Callable
from typing import Self

import strawberry

from bank_graphql.api.codes import UserErrorCode
from bank_graphql.api.scalars import Money
from bank_graphql.api.types import Account, LedgerEntry, Payment
from bank_graphql.ledger import BatchOutcome, WriteOutcome


@strawberry.type(description="Why a mutation did nothing. A mutation with errors changed nothing.")
class UserError:
    code: UserErrorCode  # type: ignore[valid-type]
    message: str
    field: list[str] | None = strawberry.field(
        description='Path to the input field at fault, e.g. ["input", "amount"].'
    )


def _user_errors(
    outcome: WriteOutcome | BatchOutcome, path: tuple[str, ...] = ("input",)
) -> list[UserError]:
    return [
        UserError(
            code=r.code,
            message=r.message,
            field=None if r.field is None else [*path, *r.field],
        )
        for r in outcome.refusals
    ]


def _account(outcome: WriteOutcome, index: int) -> Account | None:
    return Account.from_row(outcome.accounts[index]) if outcome.accounts else None


def _entry(outcome: WriteOutcome) -> LedgerEntry | None:
    return None if outcome.entry is None else LedgerEntry.from_row(outcome.entry)


def _balance(outcome: WriteOutcome) -> Money | None:
    return None if outcome.balance is None else Money(outcome.balance)


@strawberry.type
class CreateAccountPayload:
    account: Account | None
    errors: list[UserError]

    @classmethod
    def from_outcome(cls, outcome: WriteOutcome) -> Self:
        return cls(account=_account(outcome, 0), errors=_user_errors(outcome))


@strawberry.type
class DepositPayload:
    balance: Money | None = strawberry.field(
        description="The account's balance right after this deposit."
    )
    entry: LedgerEntry | None
    account: Account | None
    errors: list[UserError]

    @classmethod
    def from_outcome(cls, outcome: WriteOutcome) -> Self:
        return cls(
            balance=_balance(outcome),
            entry=_entry(outcome),
            account=_account(outcome, 0),
            errors=_user_errors(outcome),
        )


@strawberry.type
class TransferPayload:
    balance: Money | None = strawberry.field(
        description="The source account's balance right after this transfer."
    )
    entry: LedgerEntry | None = strawberry.field(
        description="The TRANSFER_OUT entry on the source account."
    )
    source_account: Account | None
    target_account: Account | None
    errors: list[UserError]

    @classmethod
    def from_outcome(
        cls, outcome: WriteOutcome, sees: Callable[[str], bool], path: tuple[str, ...] = ("input",)
    ) -> Self:
        """`sees`: whether an account exists for the caller; a target outside its scope is
        shown as null, and nothing else of it."""
        target = _account(outcome, 1)
        return cls(
            balance=_balance(outcome),
            entry=_entry(outcome),
            source_account=_account(outcome, 0),
            target_account=target if target is not None and sees(str(target.id)) else None,
            errors=_user_errors(outcome, path),
        )


@strawberry.type
class TransferBatchPayload:
    results: list[TransferPayload] = strawberry.field(
        description="One result per transfer, in the order given."
    )
    errors: list[UserError] = strawberry.field(
        description="Refusals of the batch as a whole (e.g. BATCH_TOO_LARGE)."
    )

    @classmethod
    def from_outcome(cls, outcome: BatchOutcome, sees: Callable[[str], bool]) -> Self:
        return cls(
            results=[
                TransferPayload.from_outcome(r, sees, ("input", "transfers", str(i)))
                for i, r in enumerate(outcome.results)
            ],
            errors=_user_errors(outcome),
        )


@strawberry.type
class PayPayload:
    balance: Money | None = strawberry.field(
        description="The account's balance right after this payment."
    )
    payment: Payment | None
    account: Account | None
    errors: list[UserError]

    @classmethod
    def from_outcome(cls, outcome: WriteOutcome) -> Self:
        return cls(
            balance=_balance(outcome),
            payment=None if outcome.payment is None else Payment.from_row(outcome.payment),
            account=_account(outcome, 0),
            errors=_user_errors(outcome),
        )


@strawberry.type
class MergeAccountsPayload:
    balance: Money | None = strawberry.field(
        description="The surviving account's balance right after the merge."
    )
    account: Account | None
    errors: list[UserError]

    @classmethod
    def from_outcome(cls, outcome: WriteOutcome) -> Self:
        return cls(
            balance=_balance(outcome), account=_account(outcome, 0), errors=_user_errors(outcome)
        )
