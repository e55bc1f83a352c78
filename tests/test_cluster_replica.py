"""A streaming replica (deploy/replica.sh: pg_basebackup, then streaming replication) behind
`serve --read-database-url`: reads of history go there once it has replayed every write the
primary had acknowledged, so no client ever reads its own write as missing, through any
process; while it lags past the limit they go to the primary; `export` follows the same
rule; a URL that is not a replica of the primary's database is refused at start."""

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bank_graphql.ledger import audit_books
from tests.deploy import PG_BIN, children, postmaster_pid, replica_pair
from tests.live_client import Bank
from tests.servers import Serve, Server, serve_refusal
from tests.test_export import command
from tests.test_websocket import counter

pytestmark = pytest.mark.cluster

LAG_MAX_MS = 300
HISTORY = """
query($id: ID!, $at: Timestamp!) {
  account(id: $id) { balance(at: $at) transactions(last: 1) { nodes { id } } }
}
"""
REPLICA_READS = "bank_graphql_replica_reads"
FALLBACKS = "bank_graphql_replica_fallbacks"


@dataclass(frozen=True)
class Pair:
    primary: str
    standby: str
    folder: Path

    @contextmanager
    def standby_frozen(self) -> Iterator[None]:
        """The standby stops answering (as behind a network that drops every packet) for
        the block: every process of it stopped, then let go."""
        postmaster = postmaster_pid((self.folder / "run").resolve() / "standby")
        pids = [postmaster, *children(postmaster)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def pg_ctl(self, *args: str) -> None:
        """pg_ctl on the standby, as the user its files belong to."""
        run = (self.folder / "run").resolve()
        data = run / "standby"
        log = ["-l", str(run / "standby.log")]
        command = [str(PG_BIN / "pg_ctl"), "-D", str(data), *log, *args]
        if os.geteuid() == 0:
            owner = data.owner()
            command = ["setpriv", f"--reuid={owner}", f"--regid={owner}", "--init-groups", *command]
        # Not captured: the server started would hold the pipes open.
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=120)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("replica")
    with replica_pair(folder) as (primary, standby):
        yield Pair(primary, standby, folder)


@contextmanager
def _primary_setting(pair: Pair, setting: str) -> Iterator[None]:
    """`ALTER DATABASE postgres SET setting` on the primary, for sessions opened in the
    block."""
    with psycopg.connect(pair.primary, autocommit=True) as db:
        db.execute(f"ALTER DATABASE postgres SET {setting}")
    try:
        yield
    finally:
        with psycopg.connect(pair.primary, autocommit=True) as db:
            db.execute("ALTER DATABASE postgres RESET ALL")


def _servers(
    serve: Serve, pair: Pair, count: int, env: dict[str, str] | None = None
) -> list[Server]:
    args = ["--database-url", pair.primary, "--read-database-url", pair.standby]
    lag = ["--replica-lag-max-ms", str(LAG_MAX_MS)]
    return [serve(*args, *lag, env=env) for _ in range(count)]


async def _one_server(serve: Serve, pair: Pair, account: str, balance: int) -> tuple[Server, Bank]:
    """A server on the pair, and `account` opened with `balance` through it."""
    (server,) = _servers(serve, pair, 1)
    bank = Bank(server)
    await bank.open(account, balance)
    return server, bank


async def _last_entry(bank: Bank, account: str, at: int) -> tuple[int, str]:
    """The balance of `account` at `at`, and the id of its latest entry, read as history."""
    found = (await bank.post(HISTORY, {"id": account, "at": at}))["data"]["account"]
    return found["balance"], found["transactions"]["nodes"][-1]["id"]


def _replay(pair: Pair, on: bool) -> None:
    with psycopg.connect(pair.standby, autocommit=True) as db:
        db.execute("SELECT pg_wal_replay_resume()" if on else "SELECT pg_wal_replay_pause()")


# Asynchronous commit acknowledges a write before its WAL is written: the position a read
# waits for must still cover it.
@pytest.mark.parametrize("commit", ["on", "off"])
async def test_a_write_is_never_read_as_missing_from_any_process(
    serve: Serve, pair: Pair, commit: str
) -> None:
    with _primary_setting(pair, f"synchronous_commit = {commit}"):
        writer, reader = (Bank(s) for s in _servers(serve, pair, 2))
        await _read_your_writes(writer, reader, f"ryw-{commit}")
    for bank in (writer, reader):
        await bank.aclose()


async def _read_your_writes(writer: Bank, reader: Bank, prefix: str) -> None:
    await writer.open(f"{prefix}-a", 1_000_000)
    await writer.open(f"{prefix}-b")
    for n in range(40):
        # Written through one process, read at once through the other, and back.
        source, sink = (writer, reader) if n % 2 == 0 else (reader, writer)
        entry = await source.transfer(f"{prefix}-a", f"{prefix}-b", 1)
        balance, last = await _last_entry(sink, f"{prefix}-a", entry["timestamp"])
        assert last == entry["id"], f"write {n} read as missing"
        assert balance == entry["balanceAfter"]


async def test_history_reads_use_the_replica_and_fall_back_while_it_lags(
    serve: Serve, pair: Pair
) -> None:
    server, bank = await _one_server(serve, pair, "lag-a", 1_000)
    await bank.open("lag-b")
    entry = await bank.transfer("lag-a", "lag-b", 1)
    assert (await _last_entry(bank, "lag-a", entry["timestamp"]))[1] == entry["id"]
    assert counter(server, REPLICA_READS) >= 1
    assert counter(server, FALLBACKS) == 0

    _replay(pair, on=False)
    try:
        entry = await bank.transfer("lag-a", "lag-b", 1)
        # The replica stands still: the read goes to the primary, and sees the write.
        assert (await _last_entry(bank, "lag-a", entry["timestamp"]))[1] == entry["id"]
        assert counter(server, FALLBACKS) >= 1
    finally:
        _replay(pair, on=True)
    await asyncio.sleep(1.5)  # past the time reads go straight to the primary
    served = counter(server, REPLICA_READS)
    entry = await bank.transfer("lag-a", "lag-b", 1)
    assert (await _last_entry(bank, "lag-a", entry["timestamp"]))[1] == entry["id"]
    assert counter(server, REPLICA_READS) == served + 1
    async with await psycopg.AsyncConnection.connect(pair.primary) as db:
        assert await audit_books(db) == []
    await bank.aclose()


async def _exporting(
    serve: Serve, pair: Pair, account: str, balance: int
) -> tuple[Bank, list[str]]:
    """A server, `account` opened through it, and the export of its statement from the
    primary."""
    _, bank = await _one_server(serve, pair, account, balance)
    return bank, [
        "export",
        "--database-url",
        pair.primary,
        "--account",
        account,
        "--format",
        "jsonl",
    ]


async def test_export_reads_the_replica_once_it_has_caught_up(
    serve: Serve, pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    bank, base = await _exporting(serve, pair, "exp-a", 500)
    replica = ["--read-database-url", pair.standby, "--replica-lag-max-ms", str(LAG_MAX_MS)]
    _replay(pair, on=False)
    try:
        entry = await bank.deposit("exp-a", 7)
        status, out, err = await command([*base, *replica], capsys)
        assert status == 0, err
        assert "replica lags" in err
        assert out.splitlines()[-1].startswith(f'{{"id":"{entry["id"]}"')
    finally:
        _replay(pair, on=True)
    entry = await bank.deposit("exp-a", 8)
    status, out, err = await command([*base, *replica], capsys)
    assert (status, err) == (0, "")
    assert [_id(line) for line in out.splitlines()][-2:] == [str(int(entry["id"]) - 1), entry["id"]]
    await bank.aclose()


def _id(line: str) -> Any:
    return line.split('"id":"')[1].split('"')[0]


def test_a_read_url_that_is_no_replica_of_the_database_is_refused(
    pair: Pair, database_url: str, tmp_path: Path
) -> None:
    other_cluster = ["--database-url", pair.primary, "--read-database-url", database_url]
    assert "not a replica" in serve_refusal(other_cluster, tmp_path)
    other_database = pair.standby.rsplit("/", 1)[0] + "/template1"
    stderr = serve_refusal(
        ["--database-url", pair.primary, "--read-database-url", other_database], tmp_path
    )
    assert "'template1'" in stderr
    unreachable = [
        "--database-url",
        pair.primary,
        "--read-database-url",
        "postgresql://127.0.0.1:1/x",
    ]
    assert "cannot reach --read-database-url" in serve_refusal(unreachable, tmp_path)


async def test_a_replica_that_stops_answering_costs_a_fallback_not_a_hang(
    serve: Serve, pair: Pair
) -> None:
    server, bank = await _one_server(serve, pair, "frozen-a", 100)
    with pair.standby_frozen():
        entry = await bank.deposit("frozen-a", 1)
        started = time.monotonic()
        assert (await _last_entry(bank, "frozen-a", entry["timestamp"]))[1] == entry["id"]
        assert time.monotonic() - started < LAG_MAX_MS / 1000 + 3
        assert counter(server, FALLBACKS) >= 1
    await bank.aclose()


async def test_waiting_for_the_replica_holds_no_primary_connection(
    serve: Serve, pair: Pair
) -> None:
    # Two primary connections, which a request waits at most 1 s for, and reads that wait
    # up to 3 s for a replica that stands still: writes must still get through.
    env = {"BANK_POOL_MIN_SIZE": "1", "BANK_POOL_MAX_SIZE": "2", "BANK_POOL_TIMEOUT_S": "1"}
    server = serve(
        *("--database-url", pair.primary, "--read-database-url", pair.standby),
        *("--replica-lag-max-ms", "3000"),
        env=env,
    )
    bank = Bank(server)
    await bank.open("held-a", 100)
    _replay(pair, on=False)
    try:
        entry = await bank.deposit("held-a", 1)
        reads = [_last_entry(bank, "held-a", entry["timestamp"]) for _ in range(6)]
        reading = asyncio.gather(*reads)
        await asyncio.sleep(0.3)
        later = await bank.deposit("held-a", 1)
        # Each read falls back to the primary once its wait is over, after the later write.
        assert {last for _, last in await reading} <= {entry["id"], later["id"]}
    finally:
        _replay(pair, on=True)
    await bank.aclose()


def test_the_primary_is_no_read_url_and_the_standby_no_database_url(
    pair: Pair, tmp_path: Path
) -> None:
    stderr = serve_refusal(
        ["--database-url", pair.primary, "--read-database-url", pair.primary], tmp_path
    )
    assert "not a standby" in stderr
    stderr = serve_refusal(["--database-url", pair.standby], tmp_path)
    assert "--database-url reaches a standby" in stderr


async def test_export_checks_its_replica_and_reads_the_primary_without_one(
    serve: Serve, pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    bank, base = await _exporting(serve, pair, "exp-b", 5)
    nowhere = "postgresql://postgres@127.0.0.1:1/postgres"
    status, out, err = await command([*base, "--read-database-url", nowhere], capsys)
    assert status == 0, err
    assert "reading the primary" in err
    assert len(out.splitlines()) == 1
    other_database = pair.standby.rsplit("/", 1)[0] + "/template1"
    status, out, err = await command([*base, "--read-database-url", other_database], capsys)
    assert (status, out) == (2, "")
    assert "'template1'" in err
    lag = ["--read-database-url", pair.standby, "--replica-lag-max-ms", "-5"]
    status, out, err = await command([*base, *lag], capsys)
    assert (status, out) == (2, "")
    assert "0..10000" in err
    await bank.aclose()


async def test_a_read_under_way_when_the_replica_stops_answering_ends_in_time(
    serve: Serve, pair: Pair
) -> None:
    env = {"BANK_STATEMENT_TIMEOUT_MS": "1000", "BANK_LOCK_TIMEOUT_MS": "30000"}
    (server,) = _servers(serve, pair, 1, env=env)
    bank = Bank(server)
    await bank.open("midway-a", 100)
    query = {"query": '{ account(id: "midway-a") { transactions(last: 1) { nodes { id } } } }'}
    with psycopg.connect(pair.primary) as holder:
        # Replayed on the standby, this lock holds the read there, inside its snapshot.
        holder.execute("LOCK TABLE entries IN ACCESS EXCLUSIVE MODE")
        # A commit flushes the WAL before it, the lock's included: the standby replays it.
        await bank.open("midway-flush")
        await until_replayed(pair)
        reading = asyncio.create_task(bank.http.post("/graphql", json=query))
        await asyncio.sleep(0.5)
        assert not reading.done()
        assert counter(server, REPLICA_READS) == 1, "the read is not on the replica"
        with pair.standby_frozen():
            started = time.monotonic()
            done, _ = await asyncio.wait({reading}, timeout=8)
            elapsed = time.monotonic() - started
        holder.rollback()
    assert done, "the read waited for the frozen replica"
    assert elapsed < 4
    codes = [e["extensions"]["code"] for e in (await reading).json()["errors"]]
    assert set(codes) <= {"DATABASE_UNAVAILABLE", "DATABASE_BUSY"}, codes
    await bank.aclose()


async def test_a_restarted_replica_serves_the_next_read(serve: Serve, pair: Pair) -> None:
    server, bank = await _one_server(serve, pair, "restart-a", 100)
    reads = [_last_entry(bank, "restart-a", 1) for _ in range(8)]
    await asyncio.gather(*reads)  # the replica's pool holds several connections now
    pair.pg_ctl("restart", "-m", "fast", "-w", "-t", "60")
    served, fallbacks = counter(server, REPLICA_READS), counter(server, FALLBACKS)
    entry = await bank.deposit("restart-a", 1)
    await until_replayed(pair)
    assert (await _last_entry(bank, "restart-a", entry["timestamp"]))[1] == entry["id"]
    assert counter(server, REPLICA_READS) == served + 1
    assert counter(server, FALLBACKS) == fallbacks
    await bank.aclose()


async def until_replayed(pair: Pair) -> None:
    """Until the standby answers and has replayed everything the primary has written."""
    with psycopg.connect(pair.primary, autocommit=True) as db:
        row = db.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(pair.standby, autocommit=True) as db:
                done = db.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", row).fetchone()
            if done and done[0]:
                return
        except psycopg.OperationalError:
            pass
        assert time.monotonic() < deadline, "the standby did not catch up"
        await asyncio.sleep(0.1)


async def test_a_replica_that_keeps_falling_behind_is_one_warning_a_minute(
    serve: Serve, pair: Pair
) -> None:
    server, bank = await _one_server(serve, pair, "flap-a", 100)
    for _ in range(4):
        _replay(pair, on=False)
        try:
            entry = await bank.deposit("flap-a", 1)
            assert (await _last_entry(bank, "flap-a", entry["timestamp"]))[1] == entry["id"]
        finally:
            _replay(pair, on=True)
        await asyncio.sleep(1.2)  # past the second reads go straight to the primary
        served = counter(server, REPLICA_READS)
        await _last_entry(bank, "flap-a", entry["timestamp"])
        assert counter(server, REPLICA_READS) == served + 1
    assert counter(server, FALLBACKS) >= 4
    lines = server.output().splitlines()
    warnings = [line for line in lines if "replica" in line and "WARNING" in line]
    assert len(warnings) == 1, warnings
    await bank.aclose()


async def test_only_reads_of_history_go_to_the_replica_fragments_included(
    serve: Serve, pair: Pair
) -> None:
    server, bank = await _one_server(serve, pair, "route-a", 100)
    hidden = (
        'query { ...A } fragment A on Query { x: account(id: "route-a") '
        "{ ... on Account { payments(first: 1) { nodes { id } } } } }"
    )
    plain = '{ account(id: "route-a") { balance outgoing } topSpenders(first: 1) { accountId } }'
    served = counter(server, REPLICA_READS)
    await bank.post(plain)
    assert counter(server, REPLICA_READS) == served
    await bank.post(hidden)
    assert counter(server, REPLICA_READS) == served + 1
    await bank.aclose()
