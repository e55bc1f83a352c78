"""Which database a command works on: the URL given, or the embedded PostgreSQL of the data
folder `serve` uses (started if it is not running, and stopped after only when this command
started it, so a command beside a running server leaves it running). And the one-line
refusal every command gives."""

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import NoReturn

import psycopg

from bank_graphql.ledger import (
    DatabaseIdentity,
    PoolLimits,
    SchemaVersionError,
    database_identity,
    migrate,
    require_current,
)
from bank_graphql.ops.settings_env import env_flag

DATA_DIR_DEFAULT = ".bank-graphql-data"


def refuse(command: str, reason: object, *, status: int = 2) -> NoReturn:
    if not command.startswith("bank-graphql"):
        command = f"bank-graphql {command}"
    sys.stderr.write(f"{command}: {reason}\n")
    sys.exit(status)


class OneLineParser(argparse.ArgumentParser):
    """Bad input: one line on stderr and exit status 2 (argparse alone adds the usage)."""

    def error(self, message: str) -> NoReturn:
        refuse(self.prog, message)


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """A command's parser made by argparse's own class, answering bad input as above."""
    parser.error = partial(refuse, parser.prog)  # type: ignore[method-assign]


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        metavar="URL",
        help="PostgreSQL URL (env DATABASE_URL); without one, the embedded PostgreSQL of "
        "--data-dir (started if it is not running)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("BANK_DATA_DIR") or DATA_DIR_DEFAULT),
        help="folder of the embedded PostgreSQL (env BANK_DATA_DIR, default ./.bank-graphql-data)",
    )


def add_pooler_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        default=env_flag("BANK_PGBOUNCER"),
        help="--database-url is PgBouncer (or another pooler) in transaction mode: no "
        "prepared statements, and each transaction sets its own timeouts; needs "
        "--direct-database-url (env BANK_PGBOUNCER=1)",
    )
    parser.add_argument(
        "--direct-database-url",
        default=os.environ.get("BANK_DIRECT_DATABASE_URL"),
        metavar="URL",
        help="a URL straight to PostgreSQL, for what a pooler cannot carry: the live feeds' "
        "LISTEN and the migration at start (env BANK_DIRECT_DATABASE_URL)",
    )


def check_pooler_options(args: argparse.Namespace) -> None:
    if args.pgbouncer and not (args.database_url and args.direct_database_url):
        refuse("serve", "--pgbouncer needs --database-url (the pooler) and --direct-database-url")


# What PgBouncer answers to a startup parameter PostgreSQL takes: how a pooler is told apart.
_POOLER_REFUSAL = "unsupported startup parameter"


def first_line(exc: BaseException) -> str:
    """The first line of what `exc` says, or its kind when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_connects(url: str, pooled: bool, which: str) -> DatabaseIdentity:
    """One connection opened as the pool opens them: a pooler in transaction mode named as
    PostgreSQL (it refuses the `options` the timeouts travel in) is told so in one line, and
    so is a standby, which takes no writes."""
    try:
        identity = database_identity(url, PoolLimits(transaction_pooler=pooled))
    except psycopg.Error as exc:
        reason = first_line(exc)
        if _POOLER_REFUSAL not in reason or pooled:
            refuse("serve", f"cannot reach the database through {which}: {reason}")
        if which == "--database-url":
            refuse(
                "serve",
                f"{which} is a pooler ({reason}): add --pgbouncer and "
                "--direct-database-url, a URL straight to PostgreSQL",
            )
        refuse("serve", f"{which} is a pooler ({reason}): it must reach PostgreSQL itself")
    if identity.standby:
        refuse("serve", f"{which} reaches a standby, which takes no writes: give the primary")
    return identity


def _check_same_database(pooled: str, direct: str) -> None:
    """Both URLs must reach one database: the migration at start goes the direct way."""
    straight = _check_connects(direct, False, "--direct-database-url")
    through_pooler = _check_connects(pooled, True, "--database-url")
    if through_pooler.name != straight.name:
        refuse(
            "serve",
            f"--database-url reaches {through_pooler.name!r} and --direct-database-url "
            f"{straight.name!r}: not the same database",
        )
    if through_pooler.server_started != straight.server_started:
        refuse(
            "serve",
            f"--database-url and --direct-database-url reach databases named "
            f"{straight.name!r} on two different PostgreSQL servers",
        )


def pooler_env(args: argparse.Namespace, database_url: str) -> tuple[str, dict[str, str]]:
    """The URL to migrate through (a session of its own), and what the workers read; both
    URLs checked first."""
    if args.pgbouncer:
        _check_same_database(database_url, args.direct_database_url)
    else:
        _check_connects(database_url, False, "--database-url")
    direct = args.direct_database_url or database_url
    return direct, {
        "BANK_PGBOUNCER": "1" if args.pgbouncer else "0",
        "BANK_DIRECT_DATABASE_URL": direct,
    }


@contextmanager
def database(args: argparse.Namespace, command: str, *, current: bool = True) -> Iterator[str]:
    """The database's URL. With `current`, its schema must be this release's: a URL given
    is checked, the embedded database is migrated (as `serve` would)."""
    if args.database_url:
        if current:
            try:
                require_current(args.database_url)
            except SchemaVersionError as exc:
                refuse(command, exc)
        yield args.database_url
        return
    from bank_graphql.ops.embedded import EmbeddedPostgres, EmbeddedPostgresError

    embedded = EmbeddedPostgres(args.data_dir)
    try:
        try:
            url = embedded.start()
        except EmbeddedPostgresError as exc:
            refuse(command, exc)
        if current:
            try:
                migrate(url)
            except SchemaVersionError as exc:
                refuse(command, exc)
        yield url
    finally:
        embedded.stop()
