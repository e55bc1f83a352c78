"""Tamper evidence: each account's entries form a hash chain written by the statement that
writes each entry, and `bank-graphql audit` finds any change made behind the ledger's back,
even by a superuser who disabled the append-only trigger, naming the account and entry.
Entries from before the chain are covered by the anchor the migration recorded."""

import asyncio
import os
import subprocess
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import audit_rules, migrate
from tests.conftest import GraphQLClient
from tests.operations import funded, merge, pay, transfer
from tests.servers import BIN
from tests.terminal import on_a_terminal
from tests.test_upgrade import v1_database_url  # noqa: F401  (a fixture)

Db = psycopg.AsyncConnection[Any]


def audit_cli(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [str(BIN), "audit", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def some_activity(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 10_000)
    await funded(gql, "bob", 5_000)
    await funded(gql, "carol", 0)
    await transfer(gql, "alice", "bob", 1_500, ts=2_000)
    await pay(gql, "bob", 700, ts=3_000)
    await transfer(gql, "bob", "carol", 300, ts=4_000)
    await merge(gql, "alice", "carol", ts=5_000)


def behind_the_ledgers_back(database_url: str, statement: str) -> None:
    """What a superuser can do: switch the append-only trigger off, change, switch it on."""
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE entries DISABLE TRIGGER entries_append_only")
        conn.execute(statement.encode())
        conn.execute("ALTER TABLE entries ENABLE TRIGGER entries_append_only")


async def entry_of(db: Db, account_id: str, kind: str) -> int:
    cursor = await db.execute(
        "SELECT id FROM entries WHERE account_id = %s AND kind = %s ORDER BY id LIMIT 1",
        (account_id, kind),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_an_untouched_ledger_audits_clean(gql: GraphQLClient, database_url: str) -> None:
    await some_activity(gql)
    result = audit_cli(database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == (
        "audit: 17 rules hold over 3 accounts and 9 entries; the books balance"
    )


@pytest.mark.parametrize(
    ("change", "rules"),
    [
        ("amount = amount + 1", {"entry hash chain broken", "balanceAfter chain broken"}),
        ("ts = ts + 1", {"entry hash chain broken"}),
        ("actor = 'someone else'", {"entry hash chain broken"}),
    ],
)
async def test_a_superusers_change_to_an_entry_is_named(
    gql: GraphQLClient, db: Db, database_url: str, change: str, rules: set[str]
) -> None:
    await some_activity(gql)
    target = await entry_of(db, "bob", "TRANSFER_OUT")
    behind_the_ledgers_back(database_url, f"UPDATE entries SET {change} WHERE id = {target}")

    result = audit_cli(database_url)

    assert result.returncode == 1, result.stdout + result.stderr
    findings = result.stdout.splitlines()[:-1]
    assert f"entry hash chain broken: bob entry {target}" in findings
    assert rules <= {line.split(": ")[0] for line in findings}
    assert result.stdout.splitlines()[-1].endswith("the books do NOT balance")


async def test_a_deleted_entry_breaks_the_chain_after_it(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    await some_activity(gql)
    removed = await entry_of(db, "bob", "PAYMENT")
    after = await entry_of(db, "bob", "TRANSFER_OUT")
    behind_the_ledgers_back(
        database_url,
        f"SET session_replication_role = replica; DELETE FROM entries WHERE id = {removed}",
    )
    result = audit_cli(database_url)
    assert result.returncode == 1
    assert f"entry hash chain broken: bob entry {after}" in result.stdout.splitlines()


async def test_a_forged_hash_is_replaced_by_the_chains(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    """No writer chooses an entry's hash: the trigger writes it whatever the INSERT said."""
    await some_activity(gql)
    await db.execute(
        "INSERT INTO entries (account_id, ts, kind, amount, balance_after, actor, hash) "
        "SELECT 'alice', 9000, 'DEPOSIT', 1, balance + 1, 'key:x', '\\x00'::bytea "
        "FROM accounts WHERE id = 'alice'"
    )
    await db.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 'alice'")
    result = audit_cli(database_url)
    findings = [line.split(": ")[0] for line in result.stdout.splitlines()[:-1]]
    assert "entry hash chain broken" not in findings, result.stdout


async def test_entries_before_the_chain_are_covered_by_their_anchor(
    v1_database_url: str,  # noqa: F811
) -> None:
    migrate(v1_database_url)
    clean = audit_cli(v1_database_url)
    assert clean.returncode == 0, clean.stdout
    with psycopg.connect(v1_database_url) as conn:
        row = conn.execute(
            "SELECT a.account_id, e.id FROM chain_anchors a JOIN entries e "
            "ON e.account_id = a.account_id AND e.hash IS NULL ORDER BY e.id LIMIT 1"
        ).fetchone()
    assert row is not None
    account_id, entry_id = row
    behind_the_ledgers_back(
        v1_database_url,
        f"SET session_replication_role = replica; DELETE FROM entries WHERE id = {entry_id}",
    )
    result = audit_cli(v1_database_url)
    assert result.returncode == 1
    assert (
        f"entries before the hash chain differ from their anchor: {account_id}"
        in result.stdout.splitlines()
    )


async def test_new_entries_chain_on_from_the_anchor(
    v1_database_url: str,  # noqa: F811
) -> None:
    migrate(v1_database_url)
    with psycopg.connect(v1_database_url, autocommit=True) as conn:
        account_id = conn.execute(
            "SELECT account_id FROM chain_anchors a JOIN accounts c ON c.id = a.account_id "
            "WHERE c.merged_into IS NULL ORDER BY 1 LIMIT 1"
        ).fetchone()
        assert account_id is not None
        outcome = conn.execute(
            "SELECT ledger_deposit('key:test', %s, 5, NULL, "
            "(extract(epoch FROM clock_timestamp()) * 1000)::bigint, NULL, NULL)",
            account_id,
        ).fetchone()
        assert outcome is not None
        assert outcome[0]["balance"] > 0, outcome
    assert audit_cli(v1_database_url).returncode == 0


async def test_the_audit_sees_one_instant_while_money_moves(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    """Transfers, payments and deposits commit throughout the audit; each of its checks sees
    the same snapshot, so none sees half of what another saw."""
    await some_activity(gql)
    moving = True

    async def keep_moving() -> int:
        done = 0
        ts = 10_000
        while moving:
            ts += 1
            await transfer(gql, "alice", "bob", 1, ts=ts)
            await pay(gql, "bob", 1, ts=ts)
            done += 1
        return done

    mover = asyncio.create_task(keep_moving())
    result = await asyncio.to_thread(audit_cli, database_url)
    moving = False
    assert await mover > 0
    assert result.returncode == 0, result.stdout + result.stderr


async def test_a_hash_function_replaced_to_agree_with_any_chain_is_named(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    await some_activity(gql)
    target = await entry_of(db, "bob", "TRANSFER_OUT")
    behind_the_ledgers_back(
        database_url,
        "CREATE OR REPLACE FUNCTION ledger_entry_hash(p_prev bytea, e entries) RETURNS bytea "
        "LANGUAGE sql STABLE AS $$ SELECT e.hash $$; "
        f"UPDATE entries SET amount = amount + 1 WHERE id = {target}",
    )
    result = audit_cli(database_url)
    assert result.returncode == 1
    assert "the entry hash function is not the one shipped: ledger_entry_hash gives null" in (
        result.stdout.splitlines()
    )


async def test_the_audit_shows_its_progress_on_a_terminal_only(
    gql: GraphQLClient, database_url: str
) -> None:
    await some_activity(gql)
    command = [str(BIN), "audit", "--database-url", database_url]
    returncode, drawn = await asyncio.to_thread(on_a_terminal, command)
    assert returncode == 0, drawn
    rules = len(audit_rules())
    assert f"{rules}/{rules}".encode() in drawn, drawn
    assert "rules" not in audit_cli(database_url).stderr
