"""The ledger: data access over PostgreSQL. Knows nothing of GraphQL or HTTP."""

from bank_graphql.ledger.domain.access import ANONYMOUS, Operation, Principal, Role
from bank_graphql.ledger.domain.clock import ClockMode
from bank_graphql.ledger.domain.errors import DatabaseBusy, DatabaseUnavailable, LedgerError
from bank_graphql.ledger.domain.models import (
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
from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode
from bank_graphql.ledger.service import Ledger, WriteLimits
from bank_graphql.ledger.storage.audit import audit_books
from bank_graphql.ledger.storage.cashback import Sweeper, SweepLimits
from bank_graphql.ledger.storage.database import (
    Conn,
    PoolLimits,
    ensure_database,
    open_pool,
)
from bank_graphql.ledger.storage.keyset import PageRequest
from bank_graphql.ledger.storage.migrations import (
    DatabaseTooNew,
    MigrationReport,
    MigrationsPending,
    SchemaVersionError,
    current_version,
    latest_version,
    migrate,
    pending,
    require_current,
)
from bank_graphql.ledger.storage.reads import Snapshot

__all__ = [
    "ANONYMOUS",
    "Account",
    "BatchOutcome",
    "ClockMode",
    "Conn",
    "DatabaseBusy",
    "DatabaseTooNew",
    "DatabaseUnavailable",
    "Entry",
    "EntryKind",
    "Ledger",
    "LedgerError",
    "MigrationReport",
    "MigrationsPending",
    "Operation",
    "Page",
    "PageRequest",
    "Payment",
    "PoolLimits",
    "Principal",
    "Refusal",
    "RefusalCode",
    "Role",
    "SchemaVersionError",
    "Snapshot",
    "Spender",
    "SweepLimits",
    "Sweeper",
    "TransferRequest",
    "WriteLimits",
    "WriteOutcome",
    "audit_books",
    "current_version",
    "ensure_database",
    "latest_version",
    "migrate",
    "open_pool",
    "pending",
    "require_current",
]
