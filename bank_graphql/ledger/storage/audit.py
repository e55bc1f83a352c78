"""Checks that the books balance: every rule the ledger promises, asked of the data itself.

Each check is one query naming what breaks its rule, one row per broken account, entry or
total, none when it holds; run on one snapshot they describe one instant of the ledger."""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from psycopg import AsyncConnection

from bank_graphql.ledger.storage.audit_functions import install_chain_functions
from bank_graphql.ledger.storage.database import Conn

_CHECKS: dict[str, str] = {
    # The database's own function, which its trigger writes every hash with, against the
    # shipped one the audit uses: a replaced function is named even before it writes.
    "the entry hash function is not the one shipped": r"""
        SELECT 'ledger_entry_hash gives ' || coalesce(encode(theirs, 'hex'), 'null')
        FROM (SELECT ledger_entry_hash('\x00'::bytea, known) AS theirs,
                     pg_temp.ledger_entry_hash('\x00'::bytea, known) AS shipped
              FROM jsonb_populate_record(NULL::entries,
                '{"id": 1, "account_id": "a", "ts": 2, "kind": "TRANSFER_OUT", "amount": 3,
                  "balance_after": 4, "counterparty_id": "b", "payment_id": 5,
                  "actor": "key:k|x"}') AS known) AS hashes
        WHERE theirs IS DISTINCT FROM shipped""",
    "entry hash chain broken": """
        SELECT account_id || ' entry ' || id FROM (
            SELECT e.account_id, e.id, e.hash, e.id <= coalesce(a.last_entry_id, 0) AS anchored,
                   pg_temp.ledger_entry_hash(
                       coalesce(lag(e.hash) OVER (PARTITION BY e.account_id ORDER BY e.ts, e.id),
                                a.hash, ''::bytea),
                       e) AS expected
            FROM entries e LEFT JOIN chain_anchors a ON a.account_id = e.account_id
        ) AS chain
        WHERE NOT anchored AND hash IS DISTINCT FROM expected""",
    "entries before the hash chain differ from their anchor": """
        SELECT a.account_id FROM chain_anchors a
        LEFT JOIN LATERAL (
            SELECT pg_temp.ledger_chain(e ORDER BY e.ts, e.id) AS hash, count(*) AS entry_count
            FROM entries e WHERE e.account_id = a.account_id AND e.id <= a.last_entry_id
        ) AS folded ON true
        WHERE folded.hash IS DISTINCT FROM a.hash OR folded.entry_count <> a.entry_count""",
    "balanceAfter chain broken": """
        SELECT account_id || ' entry ' || id FROM (
            SELECT account_id, id, kind, amount, balance_after,
                   lag(balance_after, 1, 0::bigint)
                       OVER (PARTITION BY account_id ORDER BY ts, id) AS balance_before
            FROM entries
        ) AS chain
        WHERE balance_after <> balance_before
            + CASE WHEN kind IN ('DEPOSIT', 'TRANSFER_IN', 'CASHBACK', 'MERGE_IN')
                   THEN amount ELSE -amount END""",
    "entries out of time order": """
        SELECT account_id || ' entry ' || id FROM (
            SELECT account_id, id, ts, lag(ts) OVER (PARTITION BY account_id ORDER BY id) AS prev_ts
            FROM entries
        ) AS t WHERE ts < prev_ts""",
    "account balance differs from its last balanceAfter": """
        SELECT a.id FROM accounts a
        LEFT JOIN LATERAL (
            SELECT balance_after FROM entries e WHERE e.account_id = a.id
            ORDER BY ts DESC, id DESC LIMIT 1
        ) AS last ON true
        WHERE a.balance <> coalesce(last.balance_after, 0)""",
    "money created or destroyed": """
        SELECT 'balances ' || b.total || ' <> deposits + cashback - payments ' || m.total
        FROM (SELECT coalesce(sum(balance), 0) AS total FROM accounts) AS b,
             (SELECT coalesce(sum(CASE kind WHEN 'PAYMENT' THEN -amount ELSE amount END), 0)
                     AS total
              FROM entries WHERE kind IN ('DEPOSIT', 'CASHBACK', 'PAYMENT')) AS m
        WHERE b.total <> m.total""",
    "unpaired transfer or merge legs": """
        SELECT format('transfers out %s in %s, merges out %s in %s', t_out, t_in, m_out, m_in)
        FROM (
            SELECT coalesce(sum(amount) FILTER (WHERE kind = 'TRANSFER_OUT'), 0) AS t_out,
                   coalesce(sum(amount) FILTER (WHERE kind = 'TRANSFER_IN'), 0) AS t_in,
                   coalesce(sum(amount) FILTER (WHERE kind = 'MERGE_OUT'), 0) AS m_out,
                   coalesce(sum(amount) FILTER (WHERE kind = 'MERGE_IN'), 0) AS m_in
            FROM entries
        ) AS legs
        WHERE t_out <> t_in OR m_out <> m_in""",
    "outgoing total differs from the ledger": """
        SELECT s.id FROM accounts s
        LEFT JOIN LATERAL (
            SELECT coalesce(sum(e.amount), 0) AS total
            FROM accounts o JOIN entries e ON e.account_id = o.id
            WHERE o.survivor_id = s.id AND e.kind IN ('TRANSFER_OUT', 'PAYMENT')
        ) AS spent ON true
        WHERE s.merged_into IS NULL AND s.outgoing <> least(spent.total, money_max())""",
    "pending cashback differs from unsettled payments": """
        SELECT s.id FROM accounts s
        LEFT JOIN LATERAL (
            SELECT coalesce(sum(p.cashback), 0) AS total
            FROM accounts o JOIN payments p ON p.account_id = o.id
            WHERE o.survivor_id = s.id AND NOT p.settled
        ) AS pending ON true
        WHERE s.merged_into IS NULL AND s.pending_cashback <> pending.total""",
    "settled payment without its cashback entry": """
        SELECT 'payment' || p.id FROM payments p
        WHERE p.settled AND p.cashback > 0
          AND NOT EXISTS (SELECT 1 FROM entries e
                          WHERE e.payment_id = p.id AND e.kind = 'CASHBACK')""",
    # Payments and merges live in rows the chain does not cover: each is held to the
    # chained entries that wrote it, or a changed payment would credit forged cashback.
    "payment differs from its ledger entry": """
        SELECT 'payment' || coalesce(p.id, e.payment_id) FROM payments p
        FULL JOIN (
            SELECT payment_id, count(*) AS n, min(account_id) AS account_id, min(ts) AS ts,
                   min(amount) AS amount
            FROM entries WHERE kind = 'PAYMENT' GROUP BY payment_id
        ) AS e ON e.payment_id = p.id
        WHERE e.n IS DISTINCT FROM 1
           OR (p.account_id, p.ts, p.amount) IS DISTINCT FROM (e.account_id, e.ts, e.amount)""",
    "cashback entry differs from its payment": """
        SELECT DISTINCT 'payment' || e.payment_id FROM (
            SELECT *, count(*) OVER (PARTITION BY payment_id) AS n
            FROM entries WHERE kind = 'CASHBACK'
        ) AS e
        JOIN accounts owner ON owner.id = e.account_id
        LEFT JOIN payments p ON p.id = e.payment_id
        LEFT JOIN accounts payer ON payer.id = p.account_id
        WHERE e.n > 1 OR p.id IS NULL OR NOT p.settled OR e.amount <> p.cashback
           OR owner.survivor_id IS DISTINCT FROM payer.survivor_id""",
    "merge differs from the ledger": """
        SELECT a.id FROM accounts a
        LEFT JOIN (
            SELECT account_id, count(*) AS n, min(counterparty_id) AS survivor, min(ts) AS ts
            FROM entries WHERE kind = 'MERGE_OUT' GROUP BY account_id
        ) AS m ON m.account_id = a.id
        LEFT JOIN accounts absorber ON absorber.id = a.merged_into
        WHERE m.n > 1 OR (a.merged_into, a.merged_at) IS DISTINCT FROM (m.survivor, m.ts)
           OR a.survivor_id <> coalesce(absorber.survivor_id, a.id)""",
    "entry missing from the live feed": """
        SELECT 'entry ' || e.id FROM entries e, feed_state s
        WHERE (e.xid IS NULL OR e.xid < s.horizon)
          AND NOT EXISTS (SELECT FROM feed f WHERE f.entry_id = e.id)""",
    "live feed positions not 1..last without gaps": """
        SELECT format('%s positions, highest %s, last handed out %s', n, top, s.last_position)
        FROM (SELECT count(*) AS n, coalesce(max(position), 0) AS top FROM feed) AS f,
             feed_state s
        WHERE n <> top OR top <> s.last_position""",
    "live feed out of an account's order": """
        SELECT account_id || ' entry ' || id FROM (
            SELECT e.account_id, e.id,
                   lag(e.id) OVER (PARTITION BY e.account_id ORDER BY f.position) AS prev_id
            FROM feed f JOIN entries e ON e.id = f.entry_id
        ) AS t WHERE id < prev_id""",
}


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    subject: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.subject}"


@dataclass(frozen=True, slots=True)
class LedgerSize:
    accounts: int
    entries: int


def _quietly(_rule: str) -> None:
    """No one is told as each rule is checked."""


def audit_rules() -> list[str]:
    return list(_CHECKS)


async def audit_findings(
    conn: Conn, on_checked: Callable[[str], object] = _quietly
) -> AsyncIterator[Finding]:
    """Every broken rule, as found, rule by rule in `audit_rules()` order (`on_checked` is
    told as each is done). For one snapshot, the caller holds `conn` in a REPEATABLE READ
    transaction."""
    for rule, query in _CHECKS.items():
        async with conn.cursor() as cursor:
            async for row in cursor.stream(query.encode()):
                yield Finding(rule, str(row[0]))
        on_checked(rule)


async def audit_database(
    database_url: str, on_checked: Callable[[str], object] = _quietly
) -> AsyncIterator[Finding | LedgerSize]:
    """The whole audit on one snapshot of a live ledger: its size, then every finding. Its
    own connection, with no statement timeout: a big ledger takes as long as it takes, and
    a read-only transaction holds back neither writers nor the live feed."""
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("SET statement_timeout = 0")
        await install_chain_functions(conn)
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM entries)"
            )
            accounts, entries = await cursor.fetchone() or (0, 0)
            yield LedgerSize(accounts, entries)
            async for finding in audit_findings(conn, on_checked):
                yield finding


async def audit_books(conn: Conn) -> list[str]:
    """Every broken rule found, as readable lines; an empty list means the books balance.
    `conn` must not be in a read-only transaction (the audit makes its own functions)."""
    await install_chain_functions(conn)
    return [str(finding) async for finding in audit_findings(conn)]
