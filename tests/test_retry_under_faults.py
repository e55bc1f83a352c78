"""Clients that retry every mutation under its idempotency key, while the server's database
connections are killed under it: every intended transfer happens exactly once. And a server
whose idle connections all died serves the next request promptly.

The server is a real `bank-graphql serve` process, so terminating its backends (found by
their application_name) never touches the test's own connections.
"""

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from tests.db_helpers import balances
from tests.operations import (
    BALANCES,
    CREATE,
    DEPOSIT,
    TRANSFER,
    Intended,
    assert_answered_as_intended,
    balances_after,
    plan_transfers,
)
from tests.servers import Serve, Server

Audit = Callable[[], Awaitable[None]]

ACCOUNTS = [f"acct-{i}" for i in range(10)]
OPENING = 10_000
TRANSFERS = 200
CLIENTS = 8
TRIES_MAX = 30
KILL_ROUNDS_MAX = 400
# Every ABANDON_EVERY-th transfer's first attempt gives up on its answer after a few
# milliseconds, as a client whose connection dropped: the server may well have done it.
ABANDON_EVERY = 8
ABANDON_AFTER_S = 0.005
RUN_TIMEOUT_S = 20.0

# Every backend of the server (its pool names itself), never this test's own connections.
KILL_ALL = """
SELECT state, left(query, 40), pg_terminate_backend(pid)
FROM pg_stat_activity
WHERE datname = current_database()
  AND pid <> pg_backend_pid()
  AND application_name = 'bank-graphql'
"""

# The server's backends busy with a request: a kill lands mid-request (mid-transaction, or
# during its COMMIT). Idle pooled connections are spared here: what their death costs is
# the subject of the last test, and killing them every 100-200 ms would only measure that.
KILL_IN_FLIGHT = KILL_ALL + "  AND state <> 'idle'\n"

IDLE_BACKENDS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'bank-graphql' AND state = 'idle'
"""


@dataclass
class Stats:
    attempts: int = 0
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    kill_rounds: int = 0
    killed_during: Counter[str] = field(default_factory=Counter)
    abandoned: int = 0
    replayed: int = 0
    last_sent_at: dict[str, float] = field(default_factory=dict)
    """Per idempotency key: when the attempt that got the payload was sent (epoch s)."""

    def summary(self) -> str:
        return (
            f"attempts={self.attempts} retries={self.retries} kills={self.kills} "
            f"(rounds: {self.kill_rounds}, during: {dict(self.killed_during)}) "
            f"abandoned={self.abandoned} replayed={self.replayed} "
            f"failures={dict(self.failures)}"
        )


@pytest.fixture
def server(serve: Serve, database_url: str) -> Server:
    """`bank-graphql serve` on a free loopback port, on this test's database."""
    return serve("--database-url", database_url, "--no-graphiql", healthy_s=30)


async def _until_payload(
    http: httpx.AsyncClient,
    document: str,
    name: str,
    variables: dict[str, Any],
    stats: Stats,
    *,
    abandon_first: bool = False,
) -> dict[str, Any]:
    """Post until the mutation answers with a payload: same key, same input every time."""
    seen: list[str] = []
    for attempt in range(TRIES_MAX):
        if attempt:
            stats.retries += 1
            await asyncio.sleep(0.01 * min(attempt, 10))
        stats.attempts += 1
        timeout: httpx.Timeout | None = None
        if abandon_first and attempt == 0:
            stats.abandoned += 1
            timeout = httpx.Timeout(10.0, read=ABANDON_AFTER_S)
        sent_at = time.time()
        try:
            response = await http.post(
                "/graphql",
                json={"query": document, "variables": variables},
                timeout=timeout or httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            reason = f"{'abandoned' if timeout else 'transport'}:{type(exc).__name__}"
        else:
            try:
                body = response.json()
            except ValueError:
                body = None
            if response.status_code != 200 or not isinstance(body, dict):
                reason = f"http:{response.status_code}"
            elif body.get("errors"):
                codes = sorted({str(e.get("extensions", {}).get("code")) for e in body["errors"]})
                reason = "graphql:" + ",".join(codes)
            else:
                payload: dict[str, Any] = body["data"][name]
                stats.last_sent_at[variables["key"]] = sent_at
                return payload
        stats.failures[reason] += 1
        seen.append(reason)
    raise AssertionError(f"{name} {variables}: no payload after {TRIES_MAX} tries: {seen}")


async def _killer(database_url: str, stop: asyncio.Event, stats: Stats) -> None:
    """Terminate the server's backends every 100-200 ms until told to stop."""
    rng = random.Random(7)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for _ in range(KILL_ROUNDS_MAX):
            if stop.is_set():
                return
            cursor = await conn.execute(KILL_IN_FLIGHT)
            rows = await cursor.fetchall()
            stats.kill_rounds += 1
            for state, query, killed in rows:
                if killed:
                    stats.kills += 1
                    # What the backend was at: a statement, or between two of a transaction.
                    words = (query or "").split()
                    doing = words[0].upper() if state == "active" and words else str(state)
                    stats.killed_during[doing] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=rng.uniform(0.1, 0.2))


async def test_retried_transfers_happen_exactly_once_while_connections_die(
    server: Server,
    database_url: str,
    db: psycopg.AsyncConnection[Any],
    audit: Audit,
    request: pytest.FixtureRequest,
) -> None:
    plan = plan_transfers(ACCOUNTS, TRANSFERS, "fault", amounts=9)
    stats = Stats()
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
        for account in ACCOUNTS:
            created = await _until_payload(
                http, CREATE, "createAccount", {"id": account, "key": f"open-{account}"}, stats
            )
            assert created["errors"] == [], created
            funded = await _until_payload(
                http,
                DEPOSIT,
                "deposit",
                {"id": account, "amount": OPENING, "key": f"fund-{account}"},
                stats,
            )
            assert funded["errors"] == [], funded
            assert funded["balance"] == OPENING, funded

        queue: asyncio.Queue[Intended] = asyncio.Queue()
        for intended in plan:
            queue.put_nowait(intended)
        answers: dict[str, dict[str, Any]] = {}

        async def client() -> None:
            while not queue.empty():
                intended = queue.get_nowait()
                answers[intended.key] = await _until_payload(
                    http,
                    TRANSFER,
                    "transfer",
                    intended.variables(),
                    stats,
                    abandon_first=int(intended.key.rsplit("-", 1)[1]) % ABANDON_EVERY == 0,
                )

        stop = asyncio.Event()
        killer = asyncio.create_task(_killer(database_url, stop, stats))
        try:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                await asyncio.gather(*(client() for _ in range(CLIENTS)))
        except TimeoutError:
            raise AssertionError(
                f"transfers not done in {RUN_TIMEOUT_S}s ({len(answers)} answered): "
                f"{stats.summary()}\n{server.output()}"
            ) from None
        finally:
            stop.set()
            await killer

        # Kept with the test's report (and any --junitxml) as well as in every message below.
        request.node.user_properties += [
            ("kills", stats.kills),
            ("killed_during", dict(stats.killed_during)),
            ("retries", stats.retries),
            ("failures", dict(stats.failures)),
        ]
        summary = stats.summary()

        # The faults were real: backends died, and some of them under a request in flight.
        assert stats.kills > 0, summary
        # Some landed on a write statement in flight: the server retried those under their
        # keys, so a client may never have seen them.
        assert stats.killed_during["SELECT"] > 0, f"no kill hit a request in flight: {summary}"
        assert server.process.poll() is None, server.output()

        # Every intended transfer answered success, with its own TRANSFER_OUT entry.
        assert_answered_as_intended(plan, answers, summary)
        answered_ids = {answers[i.key]["entry"]["id"] for i in plan}
        assert len(answered_ids) == TRANSFERS, f"two keys answered one entry: {summary}"

        # The ledger holds each of them exactly once, and nothing else.
        cursor = await db.execute("SELECT id::text FROM entries WHERE kind = 'TRANSFER_OUT'")
        stored_ids = [row[0] for row in await cursor.fetchall()]
        assert len(stored_ids) == TRANSFERS, f"{len(stored_ids)} TRANSFER_OUT entries; {summary}"
        assert set(stored_ids) == answered_ids, summary
        cursor = await db.execute("SELECT count(*) FROM entries WHERE kind = 'TRANSFER_IN'")
        assert (await cursor.fetchone()) == (TRANSFERS,), summary

        # Each key maps to one stored outcome: the one its client got.
        cursor = await db.execute(
            "SELECT key, outcome->'entry'->>'id', extract(epoch FROM created_at)::float8"
            " FROM idempotency_keys WHERE key LIKE 'fault-%'"
        )
        rows = await cursor.fetchall()
        stored = {key: entry_id for key, entry_id, _ in rows}
        assert stored == {key: answer["entry"]["id"] for key, answer in answers.items()}, summary

        # The replay path was taken: for some keys the transfer was done (its key claimed)
        # before the attempt that got the answer was even sent, so that answer was the
        # stored outcome, not a new transfer. Same host, same clock.
        stats.replayed = sum(
            1 for key, _, claimed_at in rows if claimed_at < stats.last_sent_at[key]
        )
        request.node.user_properties.append(("replayed", stats.replayed))
        summary = stats.summary()
        assert stats.replayed > 0, f"no answer came from a replay: {summary}"

        # With the faults over, a replay of every key answers exactly what its client got.
        replays = Stats()
        for intended in plan:
            replay = await _until_payload(http, TRANSFER, "transfer", intended.variables(), replays)
            assert replay == answers[intended.key], (intended, replay, answers[intended.key])
        assert replays.retries == 0, replays.summary()

        # Balances are what the intended transfers imply, through the API and in the tables.
        expected = balances_after(ACCOUNTS, OPENING, plan)
        response = await http.post("/graphql", json={"query": BALANCES})
        body = response.json()
        assert "errors" not in body, body
        seen = {node["id"]: node["balance"] for node in body["data"]["accounts"]["nodes"]}
        assert seen == expected, summary
    assert await balances(db) == expected, summary
    cursor = await db.execute("SELECT count(*) FROM entries")
    assert (await cursor.fetchone()) == (len(ACCOUNTS) + 2 * TRANSFERS,), summary
    await audit()


async def _kill_idle_connections(db: psycopg.AsyncConnection[Any], database_url: str) -> int:
    """Wait until the server's pool holds idle connections, then kill every one of them;
    returns how many died."""
    idle = 0
    for _ in range(50):
        cursor = await db.execute(IDLE_BACKENDS)
        row = await cursor.fetchone()
        idle = int(row[0]) if row else 0
        if idle >= 2:
            break
        await asyncio.sleep(0.05)
    assert idle >= 2, f"the server's pool keeps {idle} idle connections"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cursor = await conn.execute(KILL_ALL)
        killed = sum(1 for *_, ok in await cursor.fetchall() if ok)
    assert killed >= 2, killed
    await asyncio.sleep(0.2)  # the backends are gone; their connections wait in the pool
    return killed


async def test_next_request_is_prompt_after_every_idle_connection_died(
    server: Server, database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """A database restart, a failover or a proxy reaping idle connections kills every
    pooled connection at once. The database is up: the next request should open a new
    connection and be served at once, not wait out a reconnection backoff."""
    stats = Stats()
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        created = await _until_payload(
            http, CREATE, "createAccount", {"id": "solo", "key": "open-solo"}, stats
        )
        assert created["errors"] == [], created
        killed = await _kill_idle_connections(db, database_url)

        started = time.monotonic()
        deposited = await _until_payload(
            http, DEPOSIT, "deposit", {"id": "solo", "amount": 5, "key": "dep-solo"}, stats
        )
        elapsed = time.monotonic() - started
        assert deposited["errors"] == [], deposited
        assert deposited["balance"] == 5, deposited
        # A new connection on loopback takes milliseconds; a second means a backoff.
        assert elapsed < 0.5, (
            f"{killed} idle connections were killed; the next request then took "
            f"{elapsed:.2f}s, in {stats.attempts - 1} attempt(s)"
        )


async def test_a_write_without_key_is_retried_when_its_connection_died_while_idle(
    server: Server, database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    """Every pooled connection killed while idle: the next write, keyless, sees its
    connection dead before sending anything, so it takes another and succeeds at once."""
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        for query, variables in (
            (CREATE, {"id": "solo", "key": None}),
            (DEPOSIT, {"id": "solo", "amount": 5, "key": None}),
        ):
            response = await http.post("/graphql", json={"query": query, "variables": variables})
            assert "errors" not in response.json(), response.json()
        await _kill_idle_connections(db, database_url)

        variables = {"id": "solo", "amount": 7, "key": None}
        response = await http.post("/graphql", json={"query": DEPOSIT, "variables": variables})
        body = response.json()
        assert "errors" not in body, body
        assert body["data"]["deposit"]["errors"] == [], body
        assert body["data"]["deposit"]["balance"] == 12, body
