"""The shapes of money, ids, keys and time that every layer checks inputs against. Pure: no
I/O. The rules that need the ledger's state are the SQL's (bank_graphql/ledger/sql)."""

import re
from typing import Final

MAX_MONEY: Final = 2**53 - 1
"""Largest amount or balance: the biggest integer every JSON client holds exactly."""

MAX_TIMESTAMP_MS: Final = 2**53 - 1

ACCOUNT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
PAYMENT_ID_PATTERN: Final = re.compile(r"payment([1-9][0-9]{0,17})")
IDEMPOTENCY_KEY_LENGTH_MAX: Final = 128


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
