"""`--read-database-url`: a streaming replica for reads of history (`serve`) and statements
(`export`), checked before use to be a standby of the cluster the primary URL reaches,
holding the same database."""

import argparse
import os

import psycopg

from bank_graphql.ledger import DatabaseIdentity, PoolLimits, ReplicaLimits, database_identity
from bank_graphql.ops.database import first_line, refuse

LAG_MAX_MS_CEILING = 10_000
"""A read waits no longer than this for the replica: past it, the primary answers sooner."""


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


def _identity(url: str, which: str) -> DatabaseIdentity:
    try:
        return database_identity(url, PoolLimits())
    except psycopg.Error as exc:
        raise Unreachable(f"cannot reach {which}: {first_line(exc)}") from exc


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
    if replica.system != primary.system:
        refuse(command, "--read-database-url is not a replica of the database's cluster")
    if replica.name != primary.name:
        refuse(
            command,
            f"--read-database-url reaches database {replica.name!r}, the primary {primary.name!r}",
        )
    if not replica.standby:
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
