"""The transfers of the live benchmark: every one with an amount no other transfer of the
cell has, so that an event names its transfer, and its commit time noted.

Commit time = time.monotonic() when the HTTP answer arrived (the same clock as the
subscribers', on the same machine). Two pacings: open loop (request i leaves at
start + i / rate whatever came back before) and closed loop (C clients, each sending the next
request when the last one was answered), like bench/load.py.
"""

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench import auth
from bench.live_feed import Commits
from bench.load import REQUEST_TIMEOUT_S, LoadStats
from bench.operations import pick_pair

TRANSFER = (
    "mutation Transfer($input: TransferInput!) {"
    " transfer(input: $input) { entry { id } errors { code } } }"
)
DEPOSIT = (
    "mutation Deposit($a: ID!, $amount: Money!) {"
    " deposit(input: {accountId: $a, amount: $amount}) { errors { code } } }"
)
IN_FLIGHT_MAX = 256
LATE_S = 0.01  # an open-loop request that leaves later than this after its slot is late
WARM_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Pacing:
    seconds: float
    rate: float | None = None  # open loop at this many transfers/s
    clients: int = 32  # closed loop, when rate is None


@dataclass
class Writes:
    stats: LoadStats = field(default_factory=LoadStats)
    commits: Commits = field(default_factory=dict)
    late: int = 0  # open loop: requests that left over LATE_S after their slot
    lag_max_s: float = 0.0
    unsent: int = 0  # open loop: slots the window passed before a request could leave


class Writer:
    def __init__(self, base_url: str, account_ids: tuple[str, ...], first_amount: int) -> None:
        self.url = f"{base_url}/graphql"
        self.ids = account_ids
        self.amounts = itertools.count(first_amount)
        self.rng = random.Random(first_amount)
        self.writes = Writes()

    async def _send(self, session: aiohttp.ClientSession) -> None:
        amount = next(self.amounts)
        source, target = pick_pair(self.rng, self.ids, "uniform")
        variables = {
            "input": {"sourceAccountId": source, "targetAccountId": target, "amount": amount}
        }
        body = orjson.dumps({"query": TRANSFER, "variables": variables})
        stats = self.writes.stats
        started = time.monotonic()
        try:
            async with session.post(self.url, data=body, headers=auth.headers()) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.requests += 1
            stats.fail(type(exc).__name__, str(exc), 1)
            return
        answered = time.monotonic()
        stats.requests += 1
        result = _transfer_result(stats, status, raw)
        if result is None:
            return
        stats.latencies_s.append(answered - started)
        if result.get("errors"):
            stats.refused += 1
            stats.refused_by_code[str(result["errors"][0].get("code"))] += 1
            return
        stats.committed += 1
        stats.committed_amount += amount
        entry = result.get("entry") or {}
        self.writes.commits[amount] = (answered, entry.get("id"), source, target)

    async def _open_loop(self, session: aiohttp.ClientSession, pacing: Pacing) -> None:
        assert pacing.rate is not None
        gate = asyncio.Semaphore(IN_FLIGHT_MAX)
        tasks: set[asyncio.Task[None]] = set()

        async def one() -> None:
            try:
                await self._send(session)
            finally:
                gate.release()

        start = time.monotonic() + 0.02
        end = start + pacing.seconds
        slots = int(pacing.rate * pacing.seconds)
        for i in range(slots):
            slot = start + i / pacing.rate
            delay = slot - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # A server that falls behind holds IN_FLIGHT_MAX requests: the next ones wait,
            # and those whose slot the window has passed by are not sent at all.
            await gate.acquire()
            if time.monotonic() > end:
                gate.release()
                self.writes.unsent = slots - i
                break
            lag = time.monotonic() - slot
            self.writes.late += lag > LATE_S
            self.writes.lag_max_s = max(self.writes.lag_max_s, lag)
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    async def _closed_loop(self, session: aiohttp.ClientSession, pacing: Pacing) -> None:
        deadline = time.monotonic() + pacing.seconds

        async def client() -> None:
            while time.monotonic() < deadline:
                await self._send(session)

        await asyncio.gather(*(client() for _ in range(pacing.clients)))

    async def run(self, pacing: Pacing) -> Writes:
        limit = IN_FLIGHT_MAX if pacing.rate else pacing.clients
        connector = aiohttp.TCPConnector(limit=limit)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = time.monotonic()
            async with asyncio.timeout(pacing.seconds + REQUEST_TIMEOUT_S + 10):
                if pacing.rate:
                    await self._open_loop(session, pacing)
                else:
                    await self._closed_loop(session, pacing)
            self.writes.stats.elapsed_s = time.monotonic() - started
        return self.writes


def _transfer_result(stats: LoadStats, status: int, raw: bytes) -> dict[str, Any] | None:
    """The `transfer` payload, or None when the request failed (counted)."""
    if status != 200:
        stats.fail(f"http:{status}", raw.decode(errors="replace"), 1)
        return None
    body = orjson.loads(raw)
    if body.get("errors") or not body.get("data"):
        errors = body.get("errors") or [{}]
        code = (errors[0].get("extensions") or {}).get("code", "NO_CODE")
        stats.fail(f"graphql:{code}", str(errors[0].get("message")), 1)
        return None
    result: dict[str, Any] = body["data"]["transfer"]
    return result


async def warm_writes(
    base_url: str, pairs: list[tuple[str, str]], deposits: list[str]
) -> tuple[int, int]:
    """Amount-1 writes that wake each cold subscription: a transfer for each (source,
    target) of `pairs`, a deposit to each of `deposits`; returns how many of each."""
    url = f"{base_url}/graphql"
    gate = asyncio.Semaphore(WARM_CONCURRENCY)

    async def write(session: aiohttp.ClientSession, query: str, variables: dict[str, Any]) -> int:
        body = orjson.dumps({"query": query, "variables": variables})
        async with gate, session.post(url, data=body, headers=auth.headers()) as resp:
            status, answer = resp.status, orjson.loads(await resp.read())
        if status != 200 or answer.get("errors"):
            raise RuntimeError(f"warm-up write failed: {status} {answer}")
        payload = next(iter(answer["data"].values()))
        if payload["errors"]:
            raise RuntimeError(f"warm-up write refused: {payload['errors']}")
        return 1

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        transfers = await asyncio.gather(
            *(write(session, TRANSFER, _warm_transfer(s, t)) for s, t in pairs)
        )
        paid_in = await asyncio.gather(
            *(write(session, DEPOSIT, {"a": account, "amount": 1}) for account in deposits)
        )
    return sum(transfers), sum(paid_in)


def _warm_transfer(source: str, target: str) -> dict[str, Any]:
    return {"input": {"sourceAccountId": source, "targetAccountId": target, "amount": 1}}
