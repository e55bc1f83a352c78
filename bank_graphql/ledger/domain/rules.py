"""The rules of money, ids and time that every layer shares. Pure: no I/O."""

import re
from typing import Final

MAX_MONEY: Final = 2**53 - 1
"""Largest amount or balance: the biggest integer every JSON client holds exactly."""

MAX_TIMESTAMP_MS: Final = 2**53 - 1
CASHBACK_DELAY_MS: Final = 86_400_000
"""A payment's cashback is due 24 hours after the payment."""

ACCOUNT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
PAYMENT_ID_PATTERN: Final = re.compile(r"payment([1-9][0-9]{0,17})")
IDEMPOTENCY_KEY_LENGTH_MAX: Final = 128


def cashback_of(amount: int) -> int:
    """2% of a payment, rounded down, in integer minor units."""
    return amount * 2 // 100


def add_to_total(total: int, amount: int) -> int:
    """A reporting total (outgoing) plus `amount`, saturating at MAX_MONEY: a total must never
    refuse or fail a money movement. schema.sql's money_total_add does the same."""
    return min(total + amount, MAX_MONEY)


def is_account_id(value: str) -> bool:
    return ACCOUNT_ID_PATTERN.fullmatch(value) is not None


def is_idempotency_key(value: str) -> bool:
    """1..128 printable characters (no control characters, no lone surrogates)."""
    return 1 <= len(value) <= IDEMPOTENCY_KEY_LENGTH_MAX and value.isprintable()


def payment_number(payment_id: str) -> int | None:
    """The N of "paymentN", or None when the id is not of that form."""
    match = PAYMENT_ID_PATTERN.fullmatch(payment_id)
    return int(match.group(1)) if match else None


def payment_id(number: int) -> str:
    return f"payment{number}"
