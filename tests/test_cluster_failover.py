"""The failover drill: a server on a Patroni cluster (a leader and a synchronous standby,
reached through one multi-host URL that asks for the read-write node) under keyed transfers
from several clients, whose leader crashes outright (Patroni and PostgreSQL killed). Each
client resends the same key until it gets an answer. Once the standby leads and writes go
through again: every acknowledged transfer is in the ledger, none is there twice, the books
audit clean, and the longest time without a successful write is reported."""

import asyncio
import contextlib
import itertools
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bank_graphql.ledger import audit_books
from tests.deploy import PatroniCluster, children, patroni_cluster
from tests.live_client import Bank
from tests.servers import Server, launch

pytestmark = pytest.mark.cluster

ACCOUNTS = [f"f{i}" for i in range(8)]
CLIENTS = 8
TRANSFER = (
    "mutation($input: TransferInput!) { transfer(input: $input) { errors { code } entry { id } } }"
)
LOAD_BEFORE_CRASH_S = 1.5
# Writes must have gone through this long, without a failure, for the drill to end.
HEALTHY_AFTER_S = 3.0
RECOVERY_DEADLINE_S = 90.0
# Generous: Patroni takes the leader key once its ttl (10 s) has run out.
MAX_WRITE_GAP_S = 60.0


@dataclass
class Drill:
    """What the clients saw: acknowledged transfers (key -> TRANSFER_OUT entry id), when
    writes succeeded, and why requests failed."""

    stop: asyncio.Event
    deadline: float
    acked: dict[str, str] = field(default_factory=dict)
    refused: dict[str, Any] = field(default_factory=dict)
    successes: list[float] = field(default_factory=list)
    last_failure: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)

    def failed(self, why: str) -> None:
        self.failures[why] += 1
        self.last_failure = time.monotonic()

    def longest_gap(self) -> float:
        """The longest time between two successful writes."""
        times = sorted(self.successes)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _why(response: httpx.Response) -> str:
    """A failed answer's HTTP status and error codes, for the drill's summary."""
    try:
        codes = [e.get("extensions", {}).get("code") for e in response.json().get("errors", [])]
    except ValueError:
        codes = []
    return f"HTTP {response.status_code} {','.join(str(c) for c in codes)}".strip()


async def _send(http: httpx.AsyncClient, drill: Drill, key: str, input_: dict[str, Any]) -> None:
    """Send the keyed transfer until it gets a definite answer, the same key every time."""
    variables = {"input": {**input_, "idempotencyKey": key}}
    while True:
        assert time.monotonic() < drill.deadline, f"{key} unanswered: {drill.failures}"
        try:
            response = await http.post("/graphql", json={"query": TRANSFER, "variables": variables})
        except httpx.HTTPError as error:
            drill.failed(type(error).__name__)
            await asyncio.sleep(0.05)
            continue
        try:
            body = response.json() if response.status_code == 200 else {}
        except ValueError:
            body = {}
        payload = (body.get("data") or {}).get("transfer")
        if "errors" in body or payload is None:
            drill.failed(_why(response))
            await asyncio.sleep(0.05)
            continue
        drill.successes.append(time.monotonic())
        if payload["errors"]:
            drill.refused[key] = payload["errors"]
        else:
            drill.acked[key] = payload["entry"]["id"]
        return


async def _client(n: int, base: str, drill: Drill) -> None:
    """Keyed transfers between random accounts until the drill stops."""
    rng = random.Random(n)
    # Longer than the server's wait for a pool connection, so that its answer comes back.
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        count = 0
        while not drill.stop.is_set():
            source, target = rng.sample(ACCOUNTS, 2)
            input_ = {"sourceAccountId": source, "targetAccountId": target, "amount": 1 + n}
            await _send(http, drill, f"drill-{n}-{count}", input_)
            count += 1


def _crash_leader(cluster: PatroniCluster) -> str:
    """SIGKILL the leader's Patroni, its postmaster and every PostgreSQL process under it, as
    a machine would stop; the leader's name."""
    leader = cluster.leader()
    assert leader is not None, cluster.logs()
    postmaster = cluster.postmaster_pid(leader)
    for pid in (cluster.patroni_pid(leader), postmaster, *children(postmaster)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leader.name


async def _until_recovered(drill: Drill, crashed_at: float, server: Server) -> None:
    """Wait until writes have gone through for HEALTHY_AFTER_S without a failure, well after
    the crash (answers in flight at the crash do not count)."""
    while True:
        assert server.process.poll() is None, f"the server exited: {server.output()}"
        now = time.monotonic()
        since = max(crashed_at + 1, drill.last_failure)
        after = [t for t in drill.successes if t > since]
        if after and now - after[0] >= HEALTHY_AFTER_S and now - after[-1] < 1:
            return
        assert now - crashed_at < RECOVERY_DEADLINE_S, (
            f"writes did not recover within {RECOVERY_DEADLINE_S}s: {drill.failures}\n"
            f"{server.output()}"
        )
        await asyncio.sleep(0.1)


async def _scalar(db: psycopg.AsyncConnection[Any], query: str) -> Any:
    row = await (await db.execute(query)).fetchone()
    assert row is not None
    return row[0]


async def _check_ledger(url: str, drill: Drill) -> None:
    """Every acknowledged transfer in the ledger once, nothing else, and the books clean."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        assert await _scalar(db, "SELECT pg_is_in_recovery()") is False
        cursor = await db.execute("SELECT id::text FROM entries WHERE kind = 'TRANSFER_OUT'")
        written = [row[0] for row in await cursor.fetchall()]
        acked = list(drill.acked.values())
        assert len(set(acked)) == len(acked), "two keys were answered with one entry"
        assert set(acked) - set(written) == set(), "acknowledged transfers lost in the failover"
        assert len(written) == len(acked), "transfers applied that no key answered (twice?)"
        received = "SELECT count(*) FROM entries WHERE kind = 'TRANSFER_IN'"
        assert await _scalar(db, received) == len(acked)
        # Each key's stored outcome names the entry its client was answered with.
        cursor = await db.execute(
            "SELECT key, outcome -> 'entry' ->> 'id' FROM idempotency_keys WHERE key LIKE 'drill-%'"
        )
        assert dict(await cursor.fetchall()) == drill.acked
        assert await audit_books(db) == []


async def _drill(cluster: PatroniCluster, server: Server) -> Drill:
    bank = Bank(server)
    for account in ACCOUNTS:
        await bank.open(account, 10**12)
    await bank.aclose()
    drill = Drill(asyncio.Event(), time.monotonic() + RECOVERY_DEADLINE_S + 30)
    clients = [asyncio.create_task(_client(n, server.base, drill)) for n in range(CLIENTS)]
    try:
        await asyncio.sleep(LOAD_BEFORE_CRASH_S)
        assert drill.acked, f"no write went through before the crash: {drill.failures}"
        crashed_at = time.monotonic()
        crashed = _crash_leader(cluster)
        await _until_recovered(drill, crashed_at, server)
        leader = cluster.leader()
        assert leader is not None, cluster.logs()
        assert leader.name != crashed, cluster.logs()
    finally:
        drill.stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
    for client in clients:
        client.result()
    return drill


async def test_writes_survive_a_leader_crash(
    tmp_path: Path, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    with patroni_cluster(tmp_path / "cluster") as cluster:
        ready_s = time.monotonic() - started
        server = launch("--database-url", cluster.url, log=tmp_path / "server.log")
        try:
            server.wait_healthy(60)
            drill = await _drill(cluster, server)
            await _check_ledger(cluster.url, drill)
            assert server.process.poll() is None, server.output()
        finally:
            server.stop()
    gap = drill.longest_gap()
    record_property("longest_write_gap_s", round(gap, 2))
    with capsys.disabled():
        print(  # noqa: T201 - the drill's measure, shown on every run
            f"\nfailover drill: longest time without a successful write {gap:.1f}s; "
            f"{len(drill.acked)} transfers acknowledged; failed requests {dict(drill.failures)}; "
            f"cluster ready in {ready_s:.1f}s, drill total {time.monotonic() - started:.1f}s"
        )
    assert drill.refused == {}, drill.refused
    assert gap < MAX_WRITE_GAP_S
