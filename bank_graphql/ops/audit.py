"""`bank-graphql audit`: every rule of the books checked on one snapshot of the ledger, while
the server runs; each broken account and entry named on stdout, and exit status 1."""

import argparse
import asyncio
import sys

from bank_graphql.ledger import LedgerSize, audit_database, audit_rules
from bank_graphql.ops.database import add_database_options, database
from bank_graphql.ops.progress import progress

EXIT_BROKEN = 1


def add_audit_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    audit = commands.add_parser(
        "audit",
        help="verify the books on one snapshot: hash chains, balances, conservation of money, "
        "paired legs, cashback; exit 1 naming every broken account and entry",
    )
    add_database_options(audit)
    audit.set_defaults(run=run_audit)


async def _audit(database_url: str) -> int:
    """How many findings; each is written as it is found."""
    found = 0
    size = LedgerSize(0, 0)
    with progress(len(audit_rules()), "rules") as bar:
        async for item in audit_database(database_url, lambda _rule: bar.update(1)):
            if isinstance(item, LedgerSize):
                size = item
                continue
            found += 1
            sys.stdout.write(f"{item}\n")
    if found:
        sys.stdout.write(f"audit: {found} problem(s); the books do NOT balance\n")
    else:
        sys.stdout.write(
            f"audit: {len(audit_rules())} rules hold over {size.accounts} accounts and "
            f"{size.entries} entries; the books balance\n"
        )
    return found


def run_audit(args: argparse.Namespace) -> None:
    with database(args, "audit") as url:
        found = asyncio.run(_audit(url))
    sys.stdout.flush()
    if found:
        sys.exit(EXIT_BROKEN)
