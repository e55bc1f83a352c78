"""`--read-database-url`: a streaming replica for reads of history (`serve`) and statements
(`export`), checked before use to be a standby of the cluster the primary URL reaches,
holding the same database."""

import argparse
import os

import psycopg

from bank_graphql.ledger import ReplicaLimits
from bank_graphql.ops.database import refuse

LAG_MAX_MS_CEILING = 10_000
"""A read waits no longer than this for the replica: past it, the primary answers sooner."""

_IDENTITY = """
SELECT (SELECT system_identifier FROM pg_control_system())::text, current_database(),
       pg_is_in_recovery()
"""


class Unreachable(Exception):
    """The replica could not be reached."""


def add_replica_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--read-database-url",
        default=os.environ.get("BANK_READ_DATABASE_URL"),
        metavar="URL",
        help="a streaming replica of the database, for reads of history: used once it has "
        "replayed every write the primary had acknowledged (env BANK_READ_DATABASE_URL)",
    )
    parser.add_argument(
        "--replica-lag-max-ms",
        type=int,
        default=int(os.environ.get("BANK_REPLICA_LAG_MAX_MS") or ReplicaLimits().lag_max_ms),
        metavar="MS",
        help="how long a read waits for the replica to catch up before it goes to the "
        f"primary, 0..{LAG_MAX_MS_CEILING} (env BANK_REPLICA_LAG_MAX_MS, default %(default)s)",
    )


def _identity(url: str, which: str) -> tuple[str, str, bool]:
    try:
        with psycopg.Connection.connect(url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(_IDENTITY).fetchone()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unreachable(f"cannot reach {which}: {reason}") from exc
    assert row is not None
    return str(row[0]), str(row[1]), bool(row[2])


def check_replica(command: str, args: argparse.Namespace, primary_url: str) -> None:
    """Refuse, in one line, a lag out of range or a read URL that is no standby of the
    primary's cluster and database; raises Unreachable when the replica cannot be reached."""
    if not 0 <= args.replica_lag_max_ms <= LAG_MAX_MS_CEILING:
        refuse(command, f"--replica-lag-max-ms must be 0..{LAG_MAX_MS_CEILING}")
    try:
        primary = _identity(primary_url, "the database")
    except Unreachable as exc:
        refuse(command, exc)
    replica = _identity(args.read_database_url, "--read-database-url")
    if replica[0] != primary[0]:
        refuse(command, "--read-database-url is not a replica of the database's cluster")
    if replica[1] != primary[1]:
        refuse(
            command,
            f"--read-database-url reaches database {replica[1]!r}, the primary {primary[1]!r}",
        )
    if not replica[2]:
        refuse(command, "--read-database-url is not a standby: it takes writes")


def replica_env(args: argparse.Namespace, primary_url: str) -> dict[str, str]:
    """What the workers read of the replica, once checked."""
    if not args.read_database_url:
        return {"BANK_READ_DATABASE_URL": ""}
    try:
        check_replica("serve", args, primary_url)
    except Unreachable as exc:
        refuse("serve", exc)
    return {
        "BANK_READ_DATABASE_URL": args.read_database_url,
        "BANK_REPLICA_LAG_MAX_MS": str(args.replica_lag_max_ms),
    }
