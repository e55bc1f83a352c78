"""Numbered schema migrations: bank_graphql/ledger/sql/migrations/NNNN_name.sql, in order.

The database records each version applied in `schema_version`. A database made before
versions were recorded (it has the ledger's tables but no `schema_version`) is at version 1:
every schema of those releases was idempotent and at least the first release's, and every
migration from 0002 on is written to be safe on any of them.
"""

import importlib.resources
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from psycopg import Connection
from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

# Any value works as long as it is the same in every process that migrates.
_LOCK_KEY = 0x62616E6B  # "bank"

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY CHECK (version > 0),
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    -- True for version 1 of a database made before versions were recorded: found, not applied.
    adopted boolean NOT NULL DEFAULT false
)"""

_RECORD = "INSERT INTO schema_version (version, name, adopted) VALUES (%s, %s, %s)"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    file_name: str

    def sql(self) -> str:
        return _migrations_folder().joinpath(self.file_name).read_text(encoding="utf-8")


class SchemaVersionError(Exception):
    """The database's schema is not the version this program runs on."""


class DatabaseTooNew(SchemaVersionError):
    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database's schema is at version {found}, newer than this bank-graphql "
            f"knows (up to {known}): run a newer release"
        )


class MigrationsPending(SchemaVersionError):
    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database's schema is at version {found}, this bank-graphql needs {known}: "
            "run `bank-graphql migrate`"
        )


@dataclass(frozen=True, slots=True)
class MigrationReport:
    from_version: int
    to_version: int

    def __str__(self) -> str:
        if self.from_version == self.to_version:
            return f"schema up to date at version {self.to_version}"
        return f"schema migrated from version {self.from_version} to {self.to_version}"


def _migrations_folder() -> importlib.resources.abc.Traversable:
    return importlib.resources.files("bank_graphql.ledger.sql").joinpath("migrations")


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration the package ships, in order; their numbers run 1, 2, 3... without gap."""
    found = []
    for item in _migrations_folder().iterdir():
        match = _FILE_NAME.match(item.name)
        if match is not None:
            found.append(Migration(int(match["version"]), match["name"], item.name))
    found.sort(key=lambda m: m.version)
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1, 2, 3... without gap: {numbers}")
    return tuple(found)


def latest_version() -> int:
    return len(migrations())


def _recorded_version(conn: Connection[TupleRow]) -> int:
    """The database's version; reads `schema_version` only, or the catalog when it is absent."""
    row = conn.execute(
        "SELECT to_regclass('schema_version') IS NOT NULL, to_regclass('accounts') IS NOT NULL"
    ).fetchone()
    assert row is not None
    versioned, has_ledger = row
    if versioned:
        recorded = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        if recorded is not None and recorded[0] is not None:
            return int(recorded[0])
    return 1 if has_ledger else 0


def _pending_after(version: int) -> tuple[Migration, ...]:
    known = latest_version()
    if version > known:
        raise DatabaseTooNew(version, known)
    return migrations()[version:]


def current_version(database_url: str) -> int:
    """The schema version of the database: 0 when it is empty."""
    with Connection.connect(database_url, autocommit=True) as conn:
        return _recorded_version(conn)


def pending(database_url: str) -> tuple[Migration, ...]:
    """The migrations the database lacks. Raises DatabaseTooNew."""
    return _pending_after(current_version(database_url))


def require_current(database_url: str) -> None:
    """Raises MigrationsPending or DatabaseTooNew unless the database is at the latest version."""
    version = current_version(database_url)
    if _pending_after(version):
        raise MigrationsPending(version, latest_version())


def migrate(database_url: str) -> MigrationReport:
    """Apply the pending migrations in order, each in its own transaction with its version row.

    Under a session advisory lock, so several processes may migrate at once: the others wait,
    then find nothing pending. When nothing is pending it takes no lock at all.
    Raises DatabaseTooNew.
    """
    with Connection.connect(database_url, autocommit=True) as conn:
        start = _recorded_version(conn)
        if not _pending_after(start):
            return MigrationReport(start, start)
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            start = _recorded_version(conn)  # another process may have migrated meanwhile
            _apply(conn, start, _pending_after(start))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    report = MigrationReport(start, latest_version())
    log.info("%s", report)
    return report


def _apply(conn: Connection[TupleRow], start: int, todo: Sequence[Migration]) -> None:
    for migration in todo:
        with conn.transaction():
            conn.execute(_VERSION_TABLE)
            adopting = start == 1 and migration.version == 2 and _unversioned(conn)
            if adopting:
                first = migrations()[0]
                conn.execute(_RECORD, (first.version, first.name, True))
            conn.execute(migration.sql().encode())
            conn.execute(_RECORD, (migration.version, migration.name, False))
        log.info("applied migration %s", migration.file_name)


def _unversioned(conn: Connection[TupleRow]) -> bool:
    row = conn.execute("SELECT NOT EXISTS (SELECT FROM schema_version)").fetchone()
    return row is not None and bool(row[0])
