"""`bank-graphql export`: one account's statement, in the ledger's order with the balance after
each entry, as the API tells its history; streamed; a progress bar on a terminal only."""

import asyncio
import csv
import io
import json
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bank_graphql.ops.cli import build_parser, run
from bank_graphql.ops.export import COLUMNS, iso_utc
from tests.conftest import GraphQLClient
from tests.operations import DAY_MS, deposit, funded, merge, pay, transfer
from tests.servers import BIN
from tests.terminal import on_a_terminal

STATEMENT = """
query($id: ID!, $first: Int) {
  account(id: $id) {
    transactions(first: $first) {
      nodes { id accountId timestamp kind amount balanceAfter counterpartyId paymentId actor }
    }
  }
}"""


def run_command(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """A `bank-graphql` command run in this process, as `main` runs it (less the logging
    setup, which is the process's own): (exit status, stdout, stderr)."""
    try:
        run(build_parser().parse_args(argv))
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


async def command(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """run_command from a test that has an event loop of its own running."""
    return await asyncio.to_thread(run_command, argv, capsys)


def as_api_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A statement row told in the API's terms (timestamps in ms)."""
    at = datetime.fromisoformat(row["timestamp"])
    ms = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return {**row, "timestamp": ms}


async def busy_ledger(gql: GraphQLClient) -> None:
    """Deposits, a transfer, a payment whose cashback is credited, entries that share a
    timestamp (ordered by id), and a merge."""
    await funded(gql, "alice", 10_000, ts=1_000)
    await funded(gql, "bob", 0, ts=1_000)
    await funded(gql, "carol", 700, ts=1_000)
    assert (await transfer(gql, "alice", "bob", 2_500, ts=2_000))["errors"] == []
    assert (await pay(gql, "alice", 1_000, ts=3_000))["errors"] == []
    assert (await deposit(gql, "alice", 5, ts=3_000))["errors"] == []
    # Past the payment's due time: its cashback is credited before this deposit.
    assert (await deposit(gql, "alice", 1, ts=3_000 + DAY_MS))["errors"] == []
    await merge(gql, "alice", "carol", ts=4_000 + DAY_MS)


async def test_a_statement_is_the_api_history_in_csv_and_json_lines(
    gql: GraphQLClient, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await busy_ledger(gql)
    for account in ["alice", "carol"]:  # carol is merged: her own entries still export
        history = (await gql.ok(STATEMENT, {"id": account, "first": 100}))["account"]
        api = history["transactions"]["nodes"] if history else None
        base = ["export", "--database-url", database_url, "--account", account]
        status, out, err = await command(base, capsys)
        assert (status, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == ",".join(COLUMNS)
        rows = list(csv.DictReader(io.StringIO(out)))
        status, out, err = await command([*base, "--format", "jsonl"], capsys)
        assert (status, err) == (0, "")
        objects = [json.loads(line) for line in out.splitlines()]
        # Money is integer in JSON, and digits in CSV.
        assert all(type(o["amount"]) is int and type(o["balanceAfter"]) is int for o in objects)
        assert [{k: v or None for k, v in row.items()} for row in rows] == [
            {k: None if v is None else str(v) for k, v in o.items()} for o in objects
        ]
        if api is not None:
            assert [as_api_entry(o) for o in objects] == api
    kinds = [o["kind"] for o in objects]
    assert kinds == ["DEPOSIT", "MERGE_OUT"], "carol's own entries, not alice's"


async def test_from_is_inclusive_and_to_exclusive(
    gql: GraphQLClient, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await funded(gql, "alice", 1, ts=1_000)
    for ts in (2_000, 3_000, 4_000):
        assert (await deposit(gql, "alice", 1, ts=ts))["errors"] == []
    base = ["export", "--database-url", database_url, "--account", "alice", "--format", "jsonl"]
    status, out, _ = await command(
        # 2 s after the epoch, told in UTC and in UTC+02:00.
        [*base, "--from", "1970-01-01T00:00:02Z", "--to", "1970-01-01T02:00:04+02:00"],
        capsys,
    )
    assert status == 0
    assert [json.loads(line)["timestamp"] for line in out.splitlines()] == [
        "1970-01-01T00:00:02.000Z",
        "1970-01-01T00:00:03.000Z",
    ]


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--from", "2024-05-01T00:00:00"], "'2024-05-01T00:00:00' has no timezone"),
        (["--to", "2024-05-01"], "'2024-05-01' has no timezone"),
        (["--from", "yesterday"], "'yesterday' is not an ISO 8601 instant"),
        (["--from", "1969-12-31T23:59:59Z"], "is before 1970-01-01T00:00:00Z"),
        (["--from", "2024-05-02T00:00:00Z", "--to", "2024-05-01T00:00:00Z"], "--from is after"),
        (["--account", "nobody"], "no account has the id 'nobody'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    flags: list[str], said: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    account = [] if "--account" in flags else ["--account", "alice"]
    status, out, err = run_command(
        ["export", "--database-url", database_url, *account, *flags], capsys
    )
    assert (status, out) == (2, "")
    assert len(err.splitlines()) == 1, err
    assert err.startswith("bank-graphql export: "), err
    assert said in err, err


@pytest.mark.parametrize(
    "ms",
    [0, 1, 999, 86_399_999, 1_714_521_600_123, 253_402_300_799_999, 2**53 - 1],
)
def test_timestamps_read_as_iso_8601_in_utc(ms: int) -> None:
    if ms <= 253_402_300_799_999:  # within Python's dates (the year 9999)
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
        assert iso_utc(ms) == at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    else:
        # As PostgreSQL tells it: to_timestamp(9007199254740.991) at time zone 'UTC'.
        assert iso_utc(ms) == "+287396-10-12T08:59:00.991Z"


def many_entries(database_url: str, count: int) -> None:
    """An account with `count` deposits, written straight into the tables (as fast as a test
    needs it; the ledger's own chain of balances)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO accounts (id, created_at, last_entry_at, survivor_id) "
            "VALUES ('big', 0, %s, 'big')",
            (count,),
        )
        conn.execute(
            "INSERT INTO entries (account_id, ts, kind, amount, balance_after, actor) "
            "SELECT 'big', n, 'DEPOSIT', 1, n, 'anonymous' FROM generate_series(1, %s) AS n",
            (count,),
        )
        conn.execute("UPDATE accounts SET balance = %s WHERE id = 'big'", (count,))


def _export_query(database_url: str) -> str:
    """The last statement of the export's connection while it waits in its snapshot."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'bank-graphql' AND state = 'idle in transaction'"
        ).fetchone()
    return "" if row is None else str(row[0])


def test_export_streams_a_batch_at_a_time_and_draws_no_bar_on_a_pipe(database_url: str) -> None:
    many_entries(database_url, 5_000)
    command = [str(BIN), "export", "--database-url", database_url, "--account", "big"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as export:
        # Nobody reads its output yet: the export waits on a full pipe, holding its cursor
        # one batch in, the rest of the statement still on the server.
        deadline = time.monotonic() + 60
        while not (query := _export_query(database_url)).startswith("FETCH"):
            assert export.poll() is None, export.stderr.read() if export.stderr else ""
            assert time.monotonic() < deadline, "the export never waited for its reader"
            time.sleep(0.1)
        time.sleep(0.5)
        assert _export_query(database_url) == query, "it went on with nobody reading"
        assert query.startswith("FETCH FORWARD 1000 FROM"), query
        out, err = export.communicate(timeout=60)
    assert export.returncode == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == 5_001
    assert lines[-1].split(",")[2:6] == ["1970-01-01T00:00:05.000Z", "DEPOSIT", "1", "5000"]
    assert err == b"", "nothing but the statement, and no bar, when stderr is not a terminal"


def test_a_long_export_shows_its_progress_on_a_terminal(database_url: str, tmp_path: Path) -> None:
    many_entries(database_url, 5_000)
    output = tmp_path / "big.csv"
    command = [str(BIN), "export", "--database-url", database_url, "--account", "big"]
    returncode, drawn = on_a_terminal([*command, "--output", str(output)])
    assert returncode == 0, drawn
    assert b"5000/5000" in drawn, drawn
    assert b"entries/s" in drawn, drawn
    assert len(output.read_text().splitlines()) == 5_001
