"""After a cell: do the books balance, and do they hold what the clients were told?"""

from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True)
class BooksCheck:
    problems: tuple[str, ...]
    total_balance: int
    expected_total: int
    operation_entries: int  # -1: not counted

    @property
    def ok(self) -> bool:
        return not self.problems and self.total_balance == self.expected_total

    def as_dict(self) -> dict[str, Any]:
        return {
            "books_ok": self.ok,
            "audit_problems": list(self.problems[:10]),
            "money_conserved": self.total_balance == self.expected_total,
            "total_balance": self.total_balance,
            "expected_total": self.expected_total,
            "operations_in_db": self.operation_entries,
        }


async def check_books(
    conninfo: str, expected_total: int, entry_kind: str = "TRANSFER_OUT", entries_before: int = 0
) -> BooksCheck:
    """audit_books over the whole database, plus: the balances add up to what was paid in
    (`expected_total` and any cashback settled), and the count of `entry_kind` entries
    written since the `entries_before` there were at the start.
    """
    # Imported here, not at the top: `--server-ref` must get to choose which bank_graphql.
    from bank_graphql.ledger import audit_books

    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        problems = await audit_books(conn)
        cursor = await conn.execute("SELECT coalesce(sum(balance), 0)::bigint FROM accounts")
        row = await cursor.fetchone()
        total = int(row[0]) if row else -1
        cursor = await conn.execute(
            "SELECT count(*) FILTER (WHERE kind = %s::entry_kind),"
            " coalesce(sum(amount) FILTER (WHERE kind = 'CASHBACK'), 0)::bigint FROM entries",
            (entry_kind,),
        )
        row = await cursor.fetchone()
        written, cashback = (int(row[0]) - entries_before, int(row[1])) if row else (-1, 0)
    return BooksCheck(tuple(problems), total, expected_total + cashback, written)


async def audit_only(conninfo: str) -> list[str]:
    """audit_books alone, for a target server whose database holds more than the bench's."""
    from bank_graphql.ledger import audit_books

    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        return await audit_books(conn)
