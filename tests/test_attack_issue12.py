"""Attacks on the tamper evidence of schema version 7, as a database superuser would make
them: rows the hash chain does not cover (payments, merges) changed to agree with each
other, and rows appended without disabling anything. The audit must name each one."""

from typing import Any

import psycopg
import pytest

from bank_graphql.ledger.storage.audit import audit_books
from tests.conftest import GraphQLClient
from tests.db_helpers import scalar
from tests.operations import deposit
from tests.test_tamper_evidence import some_activity

Db = psycopg.AsyncConnection[Any]

DAY_MS = 86_400_000

UNSETTLED_PAYMENT_OF_BOB = {
    # Cashback follows the payment's amount: a larger payment is larger cashback credited
    # a day later, money that no entry paid for.
    "amount raised": """
        UPDATE payments SET amount = amount * 100, cashback = amount * 100 * 2 / 100;
        UPDATE accounts SET pending_cashback = (SELECT sum(cashback) FROM payments)
        WHERE id = 'bob'""",
    "moved to another payer": """
        UPDATE payments SET account_id = 'alice';
        UPDATE accounts SET pending_cashback = CASE id WHEN 'alice' THEN 14 ELSE 0 END
        WHERE id IN ('alice', 'bob')""",
    "deleted with its pending cashback": """
        DELETE FROM payments; UPDATE accounts SET pending_cashback = 0""",
}


def as_superuser(database_url: str, statements: str) -> None:
    """Every trigger off (the append-only ones, foreign keys), as a superuser can."""
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(statements.encode())


async def audited_clean(db: Db) -> None:
    await db.execute("SELECT ledger_sequence_feed(1000)")
    assert await audit_books(db) == []


@pytest.mark.parametrize("change", list(UNSETTLED_PAYMENT_OF_BOB))
async def test_a_payment_changed_behind_the_ledgers_back_is_named(
    gql: GraphQLClient, db: Db, database_url: str, change: str
) -> None:
    await some_activity(gql)
    await audited_clean(db)
    as_superuser(database_url, UNSETTLED_PAYMENT_OF_BOB[change])
    assert await audit_books(db) == ["payment differs from its ledger entry: payment1"]


async def test_a_second_cashback_entry_for_a_payment_is_named(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    """Appending needs no trigger switched off: a CASHBACK entry that chains, keeps the
    balanceAfter chain and counts as money in, for a payment already credited."""
    await some_activity(gql)
    await deposit(gql, "bob", 1, ts=3_000 + DAY_MS)  # settles bob's cashback first
    await audited_clean(db)
    await db.execute(
        "INSERT INTO entries (account_id, ts, kind, amount, balance_after, payment_id, actor) "
        "SELECT 'bob', a.last_entry_at, 'CASHBACK', p.cashback, a.balance + p.cashback, p.id, "
        "'system' FROM accounts a, payments p WHERE a.id = 'bob'"
    )
    await db.execute(
        "UPDATE accounts SET balance = balance + (SELECT cashback FROM payments) WHERE id = 'bob'"
    )
    assert await audit_books(db) == ["cashback entry differs from its payment: payment1"]


async def test_an_absorbed_account_reopened_behind_the_ledgers_back_is_named(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    await some_activity(gql)
    await audited_clean(db)
    as_superuser(
        database_url,
        "UPDATE accounts SET merged_into = NULL, merged_at = NULL, survivor_id = id "
        "WHERE id = 'carol'",
    )
    assert await audit_books(db) == ["merge differs from the ledger: carol"]


async def test_an_entry_hidden_from_the_live_feed_is_named(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    await some_activity(gql)
    await audited_clean(db)
    as_superuser(
        database_url,
        "UPDATE entries SET xid = (pg_current_xact_id()::text::bigint + 1000000)::text::xid8 "
        "WHERE id = (SELECT max(id) FROM entries); "
        "DELETE FROM feed WHERE position = (SELECT last_position FROM feed_state); "
        "UPDATE feed_state SET last_position = last_position - 1",
    )
    hidden = await scalar(db, "SELECT max(id) FROM entries")
    findings = await audit_books(db)
    assert any(
        f.startswith("entry hash chain broken: ") and f.endswith(f" entry {hidden}")
        for f in findings
    ), findings


FUNCTION_AGREEING_WITH_WHAT_IS_STORED = r"""
    CREATE OR REPLACE FUNCTION ledger_entry_hash(p_prev bytea, e entries) RETURNS bytea
    LANGUAGE sql STABLE AS $$
        SELECT coalesce(
            (SELECT s.hash FROM entries s WHERE s.id = e.id AND s.account_id = e.account_id),
            sha256(p_prev || convert_to(concat_ws('|',
                e.id, e.account_id, e.ts, e.kind, e.amount, e.balance_after,
                coalesce(e.counterparty_id, ''), coalesce(e.payment_id::text, ''),
                coalesce(e.actor, '')), 'UTF8')))
    $$;
    UPDATE entries SET actor = 'someone else'
    WHERE id = (SELECT min(id) FROM entries WHERE account_id = 'bob' AND kind = 'TRANSFER_OUT')
"""


async def test_a_hash_function_that_agrees_with_what_is_stored_is_named(
    gql: GraphQLClient, db: Db, database_url: str
) -> None:
    await some_activity(gql)
    await audited_clean(db)
    as_superuser(database_url, FUNCTION_AGREEING_WITH_WHAT_IS_STORED)
    assert await audit_books(db) != []
