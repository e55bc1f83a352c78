"""Checks that the books balance: every rule the ledger promises, asked of the data itself."""

from bank_graphql.ledger.storage.database import Conn

_CHECKS: dict[str, str] = {
    "balanceAfter chain broken": """
        SELECT account_id || ' entry ' || id FROM (
            SELECT account_id, id, kind, amount, balance_after,
                   lag(balance_after, 1, 0::bigint)
                       OVER (PARTITION BY account_id ORDER BY ts, id) AS balance_before
            FROM entries
        ) AS chain
        WHERE balance_after <> balance_before
            + CASE WHEN kind IN ('DEPOSIT', 'TRANSFER_IN', 'CASHBACK', 'MERGE_IN')
                   THEN amount ELSE -amount END
        LIMIT 20""",
    "entries out of time order": """
        SELECT account_id || ' entry ' || id FROM (
            SELECT account_id, id, ts, lag(ts) OVER (PARTITION BY account_id ORDER BY id) AS prev_ts
            FROM entries
        ) AS t WHERE ts < prev_ts LIMIT 20""",
    "account balance differs from its last balanceAfter": """
        SELECT a.id FROM accounts a
        LEFT JOIN LATERAL (
            SELECT balance_after FROM entries e WHERE e.account_id = a.id
            ORDER BY ts DESC, id DESC LIMIT 1
        ) AS last ON true
        WHERE a.balance <> coalesce(last.balance_after, 0) LIMIT 20""",
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
        WHERE s.merged_into IS NULL AND s.outgoing <> least(spent.total, money_max())
        LIMIT 20""",
    "pending cashback differs from unsettled payments": """
        SELECT s.id FROM accounts s
        LEFT JOIN LATERAL (
            SELECT coalesce(sum(p.cashback), 0) AS total
            FROM accounts o JOIN payments p ON p.account_id = o.id
            WHERE o.survivor_id = s.id AND NOT p.settled
        ) AS pending ON true
        WHERE s.merged_into IS NULL AND s.pending_cashback <> pending.total LIMIT 20""",
    "settled payment without its cashback entry": """
        SELECT 'payment' || p.id FROM payments p
        WHERE p.settled AND p.cashback > 0
          AND NOT EXISTS (SELECT 1 FROM entries e
                          WHERE e.payment_id = p.id AND e.kind = 'CASHBACK')
        LIMIT 20""",
    "entry missing from the live feed": """
        SELECT 'entry ' || e.id FROM entries e, feed_state s
        WHERE (e.xid IS NULL OR e.xid < s.horizon)
          AND NOT EXISTS (SELECT FROM feed f WHERE f.entry_id = e.id)
        LIMIT 20""",
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
        ) AS t WHERE id < prev_id LIMIT 20""",
}


async def audit_books(conn: Conn) -> list[str]:
    """Every broken rule found, as readable lines; an empty list means the books balance."""
    problems: list[str] = []
    for rule, query in _CHECKS.items():
        cursor = await conn.execute(query.encode())
        problems.extend(f"{rule}: {row[0]}" for row in await cursor.fetchall())
    return problems
