"""Pure checks of a mutation's inputs and of the locked accounts: each refusal is raised
(or returned) before anything is appended."""

from typing import TYPE_CHECKING

from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode, Refused
from bank_graphql.ledger.domain.rules import MAX_MONEY, MAX_TIMESTAMP_MS, is_account_id

if TYPE_CHECKING:  # the unit of work builds its refusals here too: no import cycle
    from bank_graphql.ledger.storage.unit_of_work import LockedAccount


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


def not_found(account_id: str, field: str) -> Refusal:
    return Refusal(
        RefusalCode.ACCOUNT_NOT_FOUND, f"account {account_id!r} does not exist", (field,)
    )


def out_of_order(requested: int, newest: int) -> Refusal:
    return Refusal(
        RefusalCode.TIMESTAMP_OUT_OF_ORDER,
        f"timestamp {requested} is earlier than the newest entry ({newest}) of an account this "
        "mutation touches",
        ("timestamp",),
    )


def insufficient_funds(account_id: str, amount: int, balance: int) -> Refusal:
    return Refusal(
        RefusalCode.INSUFFICIENT_FUNDS,
        f"amount {amount} exceeds the balance of account {account_id!r} ({balance})",
        ("amount",),
    )


def overflow(account_id: str) -> Refusal:
    return Refusal(
        RefusalCode.BALANCE_OVERFLOW,
        f"account {account_id!r} would hold more than {MAX_MONEY} minor units",
        ("amount",),
    )


def refuse_insufficient(account: "LockedAccount", amount: int) -> None:
    if amount > account.balance:
        raise Refused([insufficient_funds(account.id, amount, account.balance)])


def refuse_overflow(account: "LockedAccount", amount: int) -> None:
    # Pending cashback is counted too, so crediting it later can never overflow.
    if account.balance + account.pending_cashback + amount > MAX_MONEY:
        raise Refused([overflow(account.id)])
