"""Live feeds: what a subscriber receives, in what order, and why a subscription ends.

The global feed's order is the feed position; one account's order is (timestamp, entry id).
On one account the two agree, so a subscriber that switches from reading history to
receiving live entries drops what it has already seen by comparing keys.
"""

from dataclasses import dataclass
from enum import StrEnum

from bank_graphql.ledger.domain.errors import LedgerError
from bank_graphql.ledger.domain.models import Entry, EntryKind


class EndReason(StrEnum):
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    """Unknown, merged, or outside the subscriber's scope (the three look the same)."""
    CURSOR_AHEAD = "CURSOR_AHEAD"
    """A feed position past every entry: no event of the feed carried that cursor."""
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    """Its buffer filled: it resumes from its last cursor and loses nothing."""


class SubscriptionEnded(LedgerError):
    def __init__(self, reason: EndReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FeedItem:
    position: int
    entry: Entry
    xid: int
    """The transaction that wrote the entry (0 for entries from before the feed existed)."""


@dataclass(frozen=True, slots=True)
class TransactionSnapshot:
    """Which transactions had committed at one instant (PostgreSQL's `pg_snapshot`)."""

    xmin: int
    xmax: int
    running: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> "TransactionSnapshot":
        xmin, xmax, running = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in running.split(",") if x))

    def saw(self, xid: int) -> bool:
        """Had transaction `xid` finished (its entries, if it committed, visible)?"""
        return xid < self.xmin or (xid < self.xmax and xid not in self.running)


@dataclass(frozen=True, slots=True)
class LiveLimits:
    buffer_max: int = 1000
    """Entries waiting for one subscriber; past it, SUBSCRIBER_TOO_SLOW."""
    sequence_interval_s: float = 0.05
    """How often each process asks the database to give positions to new entries."""
    wake_interval_s: float = 1.0
    """How often a process reads the feed with no notification (a lost one, a reconnect)."""
    sequence_rows: int = 5000
    """Entries given positions per call: entries written in one huge transaction (a bulk
    load) are sequenced in calls that each scan what is left of it."""
    page_rows: int = 500
    """Rows per query when a subscriber catches up with history."""
    slow_grace_s: float = 1.0
    """How long a subscriber may stay past its buffer (a burst of one big commit) before it
    is ended as too slow; meanwhile the feed waits for it, so at most `page_rows` more
    entries wait for it at any time."""


def account_key(entry: Entry) -> tuple[int, int]:
    """An entry's place in its account's order."""
    return (entry.ts, entry.id)


def closes_account(entry: Entry, account_id: str) -> bool:
    """After this entry the account no longer exists (it was merged into another)."""
    return entry.kind is EntryKind.MERGE_OUT and entry.account_id == account_id


def not_found(account_id: str) -> SubscriptionEnded:
    return SubscriptionEnded(EndReason.ACCOUNT_NOT_FOUND, f"no account with id {account_id!r}")


def cursor_ahead(position: int) -> SubscriptionEnded:
    return SubscriptionEnded(EndReason.CURSOR_AHEAD, f"no entry has feed position {position}")


def too_slow(buffer_max: int) -> SubscriptionEnded:
    return SubscriptionEnded(
        EndReason.SUBSCRIBER_TOO_SLOW,
        f"more than {buffer_max} entries waited for this subscriber: resume from the last "
        "cursor received",
    )
