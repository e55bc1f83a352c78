"""`bank-graphql export`: one account's statement as CSV or JSON lines, streamed in the
ledger's order with the balance after each entry."""

import argparse
import asyncio
import csv
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
import psycopg

from bank_graphql.ledger import (
    Conn,
    Entry,
    StatementPeriod,
    account_statement,
    one_connection,
    primary_position,
    replayed_within,
)
from bank_graphql.ledger.domain.rules import MAX_TIMESTAMP_MS, payment_id
from bank_graphql.ops.database import (
    add_database_options,
    database,
    first_line,
    one_line_errors,
    refuse,
)
from bank_graphql.ops.progress import progress
from bank_graphql.ops.replica import Unreachable, add_replica_options, check_replica

COLUMNS = (
    "id",
    "accountId",
    "timestamp",
    "kind",
    "amount",
    "balanceAfter",
    "counterpartyId",
    "paymentId",
    "actor",
)
"""The API's names of an entry's fields; `timestamp` is ISO 8601 in UTC here."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_MS_PER_DAY = 86_400_000
# The Gregorian calendar repeats every 400 years, so a timestamp past the year 9999 (as far
# as Python's dates go) is told from its place in the cycle.
_DAYS_PER_400_YEARS = 146_097


def add_export_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    export = commands.add_parser(
        "export",
        help="write one account's statement (CSV or JSON lines) in the ledger's order",
        description="One account's entries in the ledger's order (by timestamp, then entry id) "
        "with the balance after each; a merged account's own entries included. Money is "
        "integer minor units. Instants are ISO 8601 with a timezone, e.g. "
        "2024-05-01T00:00:00Z or 2024-05-01T02:00:00+02:00.",
    )
    one_line_errors(export)
    add_database_options(export)
    add_replica_options(export)
    export.add_argument("--account", required=True, metavar="ID", help="the account's id")
    export.add_argument(
        "--from",
        dest="since",
        type=instant_ms,
        metavar="T",
        help="entries at or after T (inclusive; default: from the first)",
    )
    export.add_argument(
        "--to",
        dest="until",
        type=instant_ms,
        metavar="T",
        help="entries before T (exclusive; default: to the last)",
    )
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="default csv")
    export.add_argument(
        "--output", type=Path, metavar="FILE", help="write to FILE (default stdout)"
    )
    export.set_defaults(run=run_export)


def instant_ms(text: str) -> int:
    """An ISO 8601 instant with its timezone, as ms since the epoch (the API's Timestamp),
    rounded up: a sub-millisecond instant falls between two timestamps, and both --from
    (included) and --to (left out) then start at the later one."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 instant (2024-05-01T00:00:00Z)"
        ) from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no timezone: add Z for UTC or an offset such as +02:00"
        )
    elapsed = at - _EPOCH
    microseconds = (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds
    ms = -(-microseconds // 1000)
    if not 0 <= ms <= MAX_TIMESTAMP_MS:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970-01-01T00:00:00Z")
    return ms


def iso_utc(ms: int) -> str:
    """A Timestamp as ISO 8601 in UTC to the millisecond; past the year 9999 with a `+`."""
    days, ms_of_day = divmod(ms, _MS_PER_DAY)
    cycles, day_of_cycle = divmod(days, _DAYS_PER_400_YEARS)
    day = date.fromordinal(_EPOCH_DAY + day_of_cycle)
    year = day.year + 400 * cycles
    seconds, millis = divmod(ms_of_day, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    sign = "+" if year > 9999 else ""
    return (
        f"{sign}{year:04d}-{day.month:02d}-{day.day:02d}"
        f"T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"
    )


def statement_row(entry: Entry) -> dict[str, Any]:
    """An entry as the statement shows it, field by field (COLUMNS)."""
    return {
        "id": str(entry.id),
        "accountId": entry.account_id,
        "timestamp": iso_utc(entry.ts),
        "kind": entry.kind.value,
        "amount": entry.amount,
        "balanceAfter": entry.balance_after,
        "counterpartyId": entry.counterparty_id,
        "paymentId": None if entry.payment_id is None else payment_id(entry.payment_id),
        "actor": entry.actor,
    }


class _Writer:
    """CSV with a header line, or one JSON object a line; None is an empty CSV field."""

    def __init__(self, out: TextIO, form: str) -> None:
        self._out = out
        self._csv = csv.writer(out, lineterminator="\n") if form == "csv" else None
        if self._csv is not None:
            self._csv.writerow(COLUMNS)

    def write(self, entry: Entry) -> None:
        row = statement_row(entry)
        if self._csv is None:
            self._out.write(orjson.dumps(row).decode() + "\n")
        else:
            self._csv.writerow(["" if row[c] is None else row[c] for c in COLUMNS])


def _replica_note(why: str) -> None:
    sys.stderr.write(f"export: {why}; reading the primary\n")


@asynccontextmanager
async def _replica(url: str, position: str, lag_max_ms: int) -> AsyncIterator[Conn | None]:
    """A connection to the replica at `url` once it has replayed the WAL up to `position`;
    None, said on stderr, when it lags, cannot be reached or stops answering."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        _replica_note(f"cannot reach --read-database-url ({first_line(exc)})")
        yield None
        return
    async with conn:
        try:
            replayed = await replayed_within(conn, position, lag_max_ms / 1000)
        except (TimeoutError, psycopg.OperationalError):
            _replica_note("the replica stopped answering")
            yield None
            return
        if replayed:
            yield conn
            return
    _replica_note("the replica lags behind" if replayed is False else "the replica is no standby")
    yield None


@asynccontextmanager
async def _reading(url: str, read_url: str | None, lag_max_ms: int) -> AsyncIterator[Conn]:
    """The primary, or the replica once it has replayed what the primary had written."""
    async with one_connection(url) as primary:
        if read_url is None:
            yield primary
            return
        async with _replica(read_url, await primary_position(primary), lag_max_ms) as replica:
            yield primary if replica is None else replica


async def _export(url: str, read_url: str | None, args: argparse.Namespace, out: TextIO) -> None:
    period = StatementPeriod(args.since, args.until)
    async with (
        _reading(url, read_url, args.replica_lag_max_ms) as conn,
        account_statement(conn, args.account, period) as statement,
    ):
        if statement is None:
            refuse("export", f"no account has the id {args.account!r}")
        writer = _Writer(out, args.format)
        # No bar over a statement being printed on the same terminal.
        shown = args.output is not None or not sys.stdout.isatty()
        with progress(statement.count, "entries", shown=shown) as bar:
            async for entry in statement.entries():
                writer.write(entry)
                bar.update(1)


def _checked_replica(args: argparse.Namespace, url: str) -> str | None:
    """--read-database-url once checked to be a standby of `url`'s database; None when not
    given, or when it cannot be reached (the primary is read instead)."""
    if not args.read_database_url:
        return None
    try:
        check_replica("export", args, url)
    except Unreachable as exc:
        _replica_note(str(exc))
        return None
    return str(args.read_database_url)


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """stdout, or a file that appears at `path` only once complete."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    folder = path.resolve().parent
    try:
        handle, partial_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        refuse("export", f"cannot write in {folder}: {exc.strerror}")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            yield out
        os.replace(partial_name, path)
    except BaseException:
        Path(partial_name).unlink(missing_ok=True)
        raise


def run_export(args: argparse.Namespace) -> None:
    if args.since is not None and args.until is not None and args.since > args.until:
        refuse("export", "--from is after --to")
    try:
        with database(args, "export") as url, _output(args.output) as out:
            asyncio.run(_export(url, _checked_replica(args, url), args, out))
    except BrokenPipeError:
        # The reader left (`| head`): stop quietly, and let nothing more reach the pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as exc:
        refuse("export", str(exc).strip().splitlines()[0])
