"""`bank-graphql serve | migrate | prune-keys | keys`: every flag also reads an environment
variable."""

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import version

import psycopg

from bank_graphql.edge.logs import configure_logging
from bank_graphql.ledger import (
    RETENTION_DAYS_MIN,
    ClockMode,
    PoolLimits,
    SchemaVersionError,
    Sweeper,
    SweepLimits,
    migrate,
    open_pool,
)
from bank_graphql.ops.audit import add_audit_command
from bank_graphql.ops.backup import add_backup_command
from bank_graphql.ops.database import add_database_options, database, refuse
from bank_graphql.ops.documents import add_documents_command
from bank_graphql.ops.export import add_export_command
from bank_graphql.ops.keys import add_keys_command
from bank_graphql.ops.restore import add_restore_command
from bank_graphql.ops.serve import add_serve_command
from bank_graphql.ops.settings_env import env

log = logging.getLogger("bank_graphql")


def _retention_days(text: str) -> int:
    """`--older-than-days`: whole days, at least the minimum the help promises."""
    days = int(text) if text.strip().lstrip("-").isdigit() else None
    if days is None or days < RETENTION_DAYS_MIN:
        raise argparse.ArgumentTypeError(f"at least {RETENTION_DAYS_MIN} whole days: {text!r}")
    return days


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bank-graphql", description="A banking ledger served as a GraphQL API."
    )
    parser.add_argument(
        "--version", action="version", version=f"bank-graphql {version('bank-graphql')}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_command(commands)

    migrate_cmd = commands.add_parser(
        "migrate", help="bring the database's schema to this release's version"
    )
    add_database_options(migrate_cmd)
    migrate_cmd.set_defaults(run=run_migrate)

    prune = commands.add_parser(
        "prune-keys",
        help="delete idempotency keys older than the retention (the server's "
        "sweeper also does it hourly)",
    )
    add_database_options(prune)
    prune.add_argument(
        "--older-than-days",
        type=_retention_days,
        default=env("BANK_KEY_RETENTION_DAYS", str(RETENTION_DAYS_MIN)),
        help="retention in days, at least 7 (env BANK_KEY_RETENTION_DAYS, default 7)",
    )
    prune.set_defaults(run=run_prune_keys)
    add_keys_command(commands)
    add_audit_command(commands)
    add_export_command(commands)
    add_documents_command(commands)
    add_backup_command(commands)
    add_restore_command(commands)
    return parser


async def _prune_keys(database_url: str, retention_days: int) -> int:
    pool = await open_pool(database_url, PoolLimits(min_size=1, max_size=1))
    try:
        limits = SweepLimits(key_retention_days=retention_days)
        return await Sweeper(pool, ClockMode.SYSTEM, limits).prune_keys()
    finally:
        await pool.close()


def run_migrate(args: argparse.Namespace) -> None:
    with database(args, "migrate", current=False) as url:
        try:
            report = migrate(url)
        except SchemaVersionError as exc:
            refuse("migrate", exc)
    sys.stdout.write(f"{report}\n")


def run_prune_keys(args: argparse.Namespace) -> None:
    with database(args, "prune-keys") as url:
        pruned = asyncio.run(_prune_keys(url, args.older_than_days))
    log.info("pruned %d idempotency keys", pruned)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "log_level", "info"))
    run(args)


def run(args: argparse.Namespace) -> None:
    """The command `args` names, parsed."""
    try:
        args.run(args)
    except psycopg.Error as exc:
        # A database URL that cannot be parsed, reached or read: the operator's to fix, and
        # not the audit's exit status 1, which says the books do not balance.
        command = " ".join(filter(None, [args.command, getattr(args, "keys_command", None)]))
        refuse(command, " ".join(str(exc).split()))


if __name__ == "__main__":
    main()
