"""Business refusals: the expected ways a mutation can decline to change anything."""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class RefusalCode(StrEnum):
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    ACCOUNT_ALREADY_EXISTS = "ACCOUNT_ALREADY_EXISTS"
    INVALID_ACCOUNT_ID = "INVALID_ACCOUNT_ID"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    SAME_ACCOUNT = "SAME_ACCOUNT"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    BALANCE_OVERFLOW = "BALANCE_OVERFLOW"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    TIMESTAMP_OUT_OF_ORDER = "TIMESTAMP_OUT_OF_ORDER"
    INVALID_IDEMPOTENCY_KEY = "INVALID_IDEMPOTENCY_KEY"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    BATCH_ABORTED = "BATCH_ABORTED"
    """An atomic batch item not applied because another item was refused."""
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"


@dataclass(frozen=True, slots=True)
class Refusal:
    code: RefusalCode
    message: str
    field: tuple[str, ...] | None = None


class Refused(Exception):
    """Raised inside a write to decline it; the service turns it into data for the caller."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        super().__init__("; ".join(r.message for r in refusals))
        self.refusals = tuple(refusals)

    @classmethod
    def one(cls, code: RefusalCode, message: str, *field: str) -> "Refused":
        return cls([Refusal(code, message, field or None)])
