"""`serve --read-database-url`: a streaming replica for reads of history, checked at start to
be a copy of the database that `--database-url` reaches."""

import argparse
import os

import psycopg

from bank_graphql.ledger import ReplicaLimits
from bank_graphql.ops.database import refuse

_IDENTITY = "SELECT (SELECT system_identifier FROM pg_control_system())::text, current_database()"


def add_replica_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--read-database-url",
        default=os.environ.get("BANK_READ_DATABASE_URL"),
        metavar="URL",
        help="a streaming replica of the database: pages of history and balances or statuses "
        "at an instant are read there once it has replayed every write the primary had "
        "acknowledged (env BANK_READ_DATABASE_URL)",
    )
    parser.add_argument(
        "--replica-lag-max-ms",
        type=int,
        default=int(os.environ.get("BANK_REPLICA_LAG_MAX_MS") or ReplicaLimits().lag_max_ms),
        metavar="MS",
        help="how long a read waits for the replica to catch up before it goes to the "
        "primary (env BANK_REPLICA_LAG_MAX_MS, default %(default)s)",
    )


def _identity(url: str, which: str) -> tuple[str, str]:
    try:
        with psycopg.Connection.connect(url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(_IDENTITY).fetchone()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        refuse("serve", f"cannot reach {which}: {reason}")
    assert row is not None
    return str(row[0]), str(row[1])


def replica_env(args: argparse.Namespace, primary_url: str) -> dict[str, str]:
    """What the workers read of the replica, once it is known to be a copy of the primary's
    cluster (the same system identifier) holding the same database."""
    if not args.read_database_url:
        return {"BANK_READ_DATABASE_URL": ""}
    if args.replica_lag_max_ms < 0:
        refuse("serve", "--replica-lag-max-ms must be 0 or more")
    primary = _identity(primary_url, "the database")
    replica = _identity(args.read_database_url, "--read-database-url")
    if replica[0] != primary[0]:
        refuse("serve", "--read-database-url is not a replica of the database's cluster")
    if replica[1] != primary[1]:
        refuse(
            "serve",
            f"--read-database-url reaches database {replica[1]!r}, the primary {primary[1]!r}",
        )
    return {
        "BANK_READ_DATABASE_URL": args.read_database_url,
        "BANK_REPLICA_LAG_MAX_MS": str(args.replica_lag_max_ms),
    }
