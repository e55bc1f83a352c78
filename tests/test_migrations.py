"""Schema versions: numbered migrations applied in order, each once, under an advisory lock;
databases made before versions were recorded go on from version 1; newer ones are refused."""

import os
import re
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import (
    DatabaseTooNew,
    current_version,
    latest_version,
    migrate,
    pending,
    require_current,
)
from bank_graphql.ledger.storage.migrations import migrations
from tests.conftest import cloned_database
from tests.servers import BIN

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
MIGRATIONS = ROOT / "bank_graphql" / "ledger" / "sql" / "migrations"
# The advisory lock every migrating process takes (storage/migrations.py).
LOCK_KEY = 0x62616E6B

# What the schema is made of, read from the catalog: equal catalogs, equal schemas.
CATALOG = {
    "columns": "SELECT table_name, column_name, data_type, column_default, is_nullable,"
    " collation_name FROM information_schema.columns WHERE table_schema = 'public'"
    " ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
    " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "functions": "SELECT proname, pg_get_functiondef(oid) FROM pg_proc"
    " WHERE pronamespace = 'public'::regnamespace AND prokind <> 'a' ORDER BY 1",
    "aggregates": "SELECT p.proname, a.aggtransfn::regproc::text, a.agginitval FROM pg_aggregate a"
    " JOIN pg_proc p ON p.oid = a.aggfnoid WHERE p.pronamespace = 'public'::regnamespace"
    " ORDER BY 1",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
    " ORDER BY 1",
    "enums": "SELECT enumtypid::regtype::text, enumlabel FROM pg_enum ORDER BY 1, enumsortorder",
    "sequences": "SELECT sequencename, data_type FROM pg_sequences ORDER BY 1",
}


@contextmanager
def empty_database(server_url: str) -> Iterator[str]:
    with cloned_database(server_url, "template0", prefix="bank_migrations") as url:
        yield url


@contextmanager
def database_from(server_url: str, schema: Path) -> Iterator[str]:
    """A database made by applying `schema` as a release before versions did."""
    with empty_database(server_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(schema.read_bytes())
        yield url


def rows(url: str, query: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query.encode(), params).fetchall()


def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: rows(url, query) for name, query in CATALOG.items()}


def versions(url: str) -> list[tuple[Any, ...]]:
    return rows(url, "SELECT version, name, adopted FROM schema_version ORDER BY version")


def expected_versions(*, adopted: bool = False) -> list[tuple[Any, ...]]:
    return [(m.version, m.name, adopted and m.version == 1) for m in migrations()]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bank-graphql *args` without DATABASE_URL or any BANK_* variable but those in `env`."""
    clean = {
        k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("BANK_")
    }
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}
    )


def test_migrations_are_numbered_from_1_without_gap() -> None:
    files = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
    assert [int(name[:4]) for name in files] == list(range(1, len(files) + 1))
    assert [m.file_name for m in migrations()] == files


def test_first_migration_is_the_first_release_schema() -> None:
    def statements(path: Path) -> str:
        text = path.read_text()
        return text[text.index("\n\n") :]  # past the opening comment, which says what it is

    first = MIGRATIONS / "0001_first_release.sql"
    assert statements(first) == statements(FIXTURES / "schema_v1.sql")


def test_schema_sql_includes_every_migration_in_order() -> None:
    included = re.findall(r"^\\ir (\S+)$", (ROOT / "schema.sql").read_text(), re.MULTILINE)
    assert included == [f"bank_graphql/ledger/sql/migrations/{m.file_name}" for m in migrations()]


def test_an_empty_database_is_migrated_and_records_each_version(server_url: str) -> None:
    with empty_database(server_url) as url:
        assert current_version(url) == 0
        assert pending(url) == migrations()
        report = migrate(url)
        assert (report.from_version, report.to_version) == (0, latest_version())
        assert versions(url) == expected_versions()
        assert current_version(url) == latest_version()
        assert pending(url) == ()
        require_current(url)


def test_migrating_again_changes_nothing(server_url: str) -> None:
    with empty_database(server_url) as url:
        migrate(url)
        before = catalog(url), rows(url, "TABLE schema_version")
        report = migrate(url)
        assert str(report) == f"schema up to date at version {latest_version()}"
        assert (catalog(url), rows(url, "TABLE schema_version")) == before


def test_an_up_to_date_database_is_not_locked_to_check_it(database_url: str) -> None:
    """Nothing pending: no advisory lock, and no lock on a ledger table, so a start does not
    wait behind a long transaction (nor a migration elsewhere)."""
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        holder.execute("LOCK TABLE accounts, entries, payments, idempotency_keys")
        done = threading.Event()
        worker = threading.Thread(target=lambda: (migrate(database_url), done.set()))
        worker.start()
        worker.join(timeout=10)
        assert done.is_set(), "migrate waited for a lock with nothing to do"
        holder.rollback()
        holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def test_several_migrations_at_once_apply_each_version_once(server_url: str) -> None:
    with empty_database(server_url) as url:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: run_cli("migrate", "--database-url", url), range(4)))
        assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
        outputs = sorted(r.stdout for r in results)
        assert outputs == [
            f"schema migrated from version 0 to {latest_version()}\n",
            *[f"schema up to date at version {latest_version()}\n"] * 3,
        ]
        assert versions(url) == expected_versions()


def test_a_database_before_versions_goes_on_from_version_1(server_url: str) -> None:
    """Made by the schema.sql of the last release before versions: taken to be at version 1,
    it ends with the same schema as a database migrated from empty."""
    with empty_database(server_url) as fresh:
        migrate(fresh)
        with database_from(server_url, FIXTURES / "schema_pre_versioning.sql") as url:
            assert current_version(url) == 1
            result = run_cli("migrate", "--database-url", url)
            assert result.returncode == 0, result.stderr
            assert result.stdout == f"schema migrated from version 1 to {latest_version()}\n"
            assert versions(url) == expected_versions(adopted=True)
            assert catalog(url) == catalog(fresh)


def test_a_first_release_database_ends_with_the_current_schema(server_url: str) -> None:
    with empty_database(server_url) as fresh:
        migrate(fresh)
        with database_from(server_url, FIXTURES / "schema_v1.sql") as url:
            migrate(url)
            assert catalog(url) == catalog(fresh)


@pytest.fixture
def newer_database_url(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_version (version, name) VALUES (%s, 'from_the_future')",
            (latest_version() + 1,),
        )
    return database_url


def test_migrate_refuses_a_newer_database(newer_database_url: str) -> None:
    with pytest.raises(DatabaseTooNew):
        migrate(newer_database_url)
    result = run_cli("migrate", "--database-url", newer_database_url)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "newer than this bank-graphql knows" in result.stderr


@pytest.mark.parametrize("flags", [[], ["--no-migrate"]])
def test_serve_refuses_a_newer_database(newer_database_url: str, flags: list[str]) -> None:
    result = run_cli("serve", "--database-url", newer_database_url, "--port", "1", *flags)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("bank-graphql serve: the database's schema is at version")
    assert "newer than this bank-graphql knows" in result.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_no_migrate_refuses_an_older_database(server_url: str, how: str) -> None:
    with database_from(server_url, FIXTURES / "schema_v1.sql") as url:
        args = ["serve", "--database-url", url, "--port", "1"]
        if how == "flag":
            result = run_cli(*args, "--no-migrate")
        else:
            result = run_cli(*args, env={"BANK_NO_MIGRATE": "1"})
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1, result.stderr
        assert "run `bank-graphql migrate`" in result.stderr
        assert current_version(url) == 1
        assert rows(url, "SELECT to_regclass('schema_version')") == [(None,)]
