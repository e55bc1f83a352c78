"""The audit's own copy of the hash chain's functions, made in the session's temporary schema
from the definitions this release ships (the migrations that last define them): the audit
recomputes every hash without trusting the functions of the database it audits, which a
superuser could have replaced."""

import re
from functools import cache

from bank_graphql.ledger.storage.database import Conn
from bank_graphql.ledger.storage.migrations import migrations

_DEFINITIONS = (
    re.compile(r"CREATE OR REPLACE FUNCTION ledger_entry_hash\(.*?\$\$;", re.DOTALL),
    re.compile(r"CREATE OR REPLACE AGGREGATE ledger_chain\(.*?\);", re.DOTALL),
)
_INTO_PG_TEMP = (
    ("FUNCTION ledger_entry_hash(", "FUNCTION pg_temp.ledger_entry_hash("),
    ("AGGREGATE ledger_chain(", "AGGREGATE pg_temp.ledger_chain("),
    ("SFUNC = ledger_entry_hash", "SFUNC = pg_temp.ledger_entry_hash"),
)


@cache
def shipped_chain_functions() -> str:
    """`pg_temp.ledger_entry_hash` and `pg_temp.ledger_chain`, as the migrations define
    `ledger_entry_hash` and `ledger_chain`."""
    statements = []
    for definition in _DEFINITIONS:
        found = [m.group(0) for step in migrations() for m in definition.finditer(step.sql())]
        if not found:
            raise LookupError(f"no migration defines {definition.pattern!r}")
        statements.append(found[-1])
    text = "\n".join(statements)
    for shipped, temporary in _INTO_PG_TEMP:
        text = text.replace(shipped, temporary)
    return text


async def install_chain_functions(conn: Conn) -> None:
    """Outside a read-only transaction: it creates (temporary) functions."""
    await conn.execute(shipped_chain_functions().encode())
