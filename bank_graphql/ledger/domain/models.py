"""Rows the ledger hands to its callers: frozen, typed, free of any transport concern."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from bank_graphql.ledger.domain.refusals import Refusal

T = TypeVar("T")


class EntryKind(StrEnum):
    DEPOSIT = "DEPOSIT"
    TRANSFER_IN = "TRANSFER_IN"
    TRANSFER_OUT = "TRANSFER_OUT"
    PAYMENT = "PAYMENT"
    CASHBACK = "CASHBACK"
    MERGE_IN = "MERGE_IN"
    MERGE_OUT = "MERGE_OUT"


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    created_at: int
    outgoing: int


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    account_id: str
    ts: int
    kind: EntryKind
    amount: int
    balance_after: int
    counterparty_id: str | None
    payment_id: int | None
    actor: str | None = None
    """Who caused it (a principal, or "system" for cashback); None before access control."""


@dataclass(frozen=True, slots=True)
class Payment:
    id: int
    owner_id: str
    """The account that owns the payment now: the payer, or its survivor after merges."""
    ts: int
    amount: int
    cashback: int
    cashback_due_at: int


@dataclass(frozen=True, slots=True)
class Spender:
    account_id: str
    outgoing: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One keyset page: the rows in order and whether more exist on either side."""

    rows: list[T]
    has_previous: bool
    has_next: bool


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a mutation did: refusals (and nothing else), or the rows it produced."""

    refusals: tuple[Refusal, ...] = ()
    balance: int | None = None
    entry: Entry | None = None
    payment: Payment | None = None
    accounts: tuple[Account, ...] = ()


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """One transfer as a client asked for it (an item of a batch)."""

    source_id: str
    target_id: str
    amount: int
    timestamp: int | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One outcome per item, in order; or refusals of the batch as a whole."""

    results: tuple[WriteOutcome, ...]
    refusals: tuple[Refusal, ...] = ()
