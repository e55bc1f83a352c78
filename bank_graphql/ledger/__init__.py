"""The ledger: data access over PostgreSQL. Knows nothing of GraphQL or HTTP."""

from bank_graphql.ledger.audit import audit_books
from bank_graphql.ledger.cashback import Sweeper, SweepLimits
from bank_graphql.ledger.clock import ClockMode
from bank_graphql.ledger.database import (
    Conn,
    PoolLimits,
    ensure_database,
    is_busy,
    is_unavailable,
    migrate,
    open_pool,
)
from bank_graphql.ledger.keyset import PageRequest
from bank_graphql.ledger.models import (
    Account,
    BatchOutcome,
    Entry,
    EntryKind,
    Page,
    Payment,
    Spender,
    TransferRequest,
    WriteOutcome,
)
from bank_graphql.ledger.reads import Snapshot
from bank_graphql.ledger.refusals import Refusal, RefusalCode
from bank_graphql.ledger.service import Ledger, WriteLimits

__all__ = [
    "Account",
    "BatchOutcome",
    "ClockMode",
    "Conn",
    "Entry",
    "EntryKind",
    "Ledger",
    "Page",
    "PageRequest",
    "Payment",
    "PoolLimits",
    "Refusal",
    "RefusalCode",
    "Snapshot",
    "Spender",
    "SweepLimits",
    "Sweeper",
    "TransferRequest",
    "WriteLimits",
    "WriteOutcome",
    "audit_books",
    "ensure_database",
    "is_busy",
    "is_unavailable",
    "migrate",
    "open_pool",
]
