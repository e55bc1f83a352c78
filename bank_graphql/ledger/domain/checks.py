"""Checks of the shape of a mutation's inputs, made before the database is asked. The rules
that need the ledger's state are the SQL write functions' (bank_graphql/ledger/sql)."""

from collections.abc import Callable

from bank_graphql.ledger.domain.outcomes import worded
from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode
from bank_graphql.ledger.domain.rules import MAX_MONEY, MAX_TIMESTAMP_MS, is_account_id


def account_id_refusals(account_id: str, field: str) -> list[Refusal]:
    if is_account_id(account_id):
        return []
    return [
        Refusal(
            RefusalCode.INVALID_ACCOUNT_ID,
            "an account id is 1 to 64 characters: a letter or digit, then letters, digits "
            "or _ . : @ -",
            (field,),
        )
    ]


def amount_refusals(amount: int) -> list[Refusal]:
    if 1 <= amount <= MAX_MONEY:
        return []
    return [
        Refusal(
            RefusalCode.INVALID_AMOUNT,
            f"amount must be between 1 and {MAX_MONEY} minor units",
            ("amount",),
        )
    ]


def timestamp_refusals(timestamp: int | None) -> list[Refusal]:
    if timestamp is None or 0 <= timestamp <= MAX_TIMESTAMP_MS:
        return []
    return [
        Refusal(
            RefusalCode.INVALID_TIMESTAMP,
            f"timestamp must be between 0 and {MAX_TIMESTAMP_MS}",
            ("timestamp",),
        )
    ]


def same_account(field: str, message: str) -> Refusal:
    return Refusal(RefusalCode.SAME_ACCOUNT, message, (field,))


def scope_refusals(sees: Callable[[str], bool], *accounts: tuple[str, str]) -> list[Refusal]:
    """The first of `accounts` (id, field) that does not exist for the credential, refused
    exactly as the ledger refuses an id never created (ledger_not_found in the SQL)."""
    for account_id, field in accounts:
        if not sees(account_id):
            return [worded(RefusalCode.ACCOUNT_NOT_FOUND, field, id=account_id)]
    return []
