"""The ledger: data access over PostgreSQL. Knows nothing of GraphQL or HTTP."""

from bank_graphql.ledger.domain.access import (
    ANONYMOUS,
    Operation,
    Principal,
    Role,
    credential_problem,
    principal_problem,
)
from bank_graphql.ledger.domain.clock import ClockMode
from bank_graphql.ledger.domain.errors import DatabaseBusy, DatabaseUnavailable, LedgerError
from bank_graphql.ledger.domain.live import EndReason, LiveLimits, SubscriptionEnded
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
from bank_graphql.ledger.storage.audit import (
    Finding,
    LedgerSize,
    audit_books,
    audit_database,
    audit_rules,
)
from bank_graphql.ledger.storage.backup import (
    AFTER_RESTORE,
    accepted_column_options,
    setting_names,
    user_relations,
)
from bank_graphql.ledger.storage.cashback import Sweeper, SweepLimits
from bank_graphql.ledger.storage.credentials import (
    KEY_PREFIX,
    ApiKey,
    api_key_problem,
    count_api_keys,
    create_api_key,
    create_first_admin_key,
    list_api_keys,
    revoke_api_key,
)
from bank_graphql.ledger.storage.database import (
    Conn,
    DatabaseIdentity,
    PoolLimits,
    database_identity,
    ensure_database,
    one_connection,
    open_pool,
)
from bank_graphql.ledger.storage.idempotency import RETENTION_DAYS_MIN
from bank_graphql.ledger.storage.key_ring import KeyRing, KeyRingLimits
from bank_graphql.ledger.storage.keyset import PageRequest
from bank_graphql.ledger.storage.live import LiveFeed
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
from bank_graphql.ledger.storage.replica import (
    Replica,
    ReplicaLimits,
    primary_position,
    replayed_within,
)
from bank_graphql.ledger.storage.statement import Statement, StatementPeriod, account_statement

__all__ = [
    "AFTER_RESTORE",
    "ANONYMOUS",
    "KEY_PREFIX",
    "RETENTION_DAYS_MIN",
    "Account",
    "ApiKey",
    "BatchOutcome",
    "ClockMode",
    "Conn",
    "DatabaseBusy",
    "DatabaseIdentity",
    "DatabaseTooNew",
    "DatabaseUnavailable",
    "EndReason",
    "Entry",
    "EntryKind",
    "Finding",
    "KeyRing",
    "KeyRingLimits",
    "Ledger",
    "LedgerError",
    "LedgerSize",
    "LiveFeed",
    "LiveLimits",
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
    "Replica",
    "ReplicaLimits",
    "Role",
    "SchemaVersionError",
    "Snapshot",
    "Spender",
    "Statement",
    "StatementPeriod",
    "SubscriptionEnded",
    "SweepLimits",
    "Sweeper",
    "TransferRequest",
    "WriteLimits",
    "WriteOutcome",
    "accepted_column_options",
    "account_statement",
    "api_key_problem",
    "audit_books",
    "audit_database",
    "audit_rules",
    "count_api_keys",
    "create_api_key",
    "create_first_admin_key",
    "credential_problem",
    "current_version",
    "database_identity",
    "ensure_database",
    "latest_version",
    "list_api_keys",
    "migrate",
    "one_connection",
    "open_pool",
    "pending",
    "primary_position",
    "principal_problem",
    "replayed_within",
    "require_current",
    "revoke_api_key",
    "setting_names",
    "user_relations",
]
