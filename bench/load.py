"""The GraphQL load generator: C clients sending writes over loopback for S seconds.

Every loop is bounded twice, by a deadline and by a count, and the whole phase by an outer
timeout, so a stuck server cannot hold the bench.
"""

import asyncio
import contextlib
import math
import random
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench import auth, http1
from bench.operations import RequestMaker, answers

REQUEST_TIMEOUT_S = 30.0
REQUESTS_PER_CLIENT_MAX = 1_000_000
SETUP_CONCURRENCY = 8
BATCH_SIZE_MAX = 1000
ERROR_BACKOFF_S = 0.05

OPEN_ACCOUNT = (
    "mutation Open($id: ID!, $amount: Money!) {"
    " createAccount(input: {id: $id}) { errors { code } }"
    " deposit(input: {accountId: $id, amount: $amount}) { balance errors { code } } }"
)
MUTATION_FIELDS = "{ __schema { mutationType { fields { name } } } }"


@dataclass(frozen=True, slots=True)
class LoadSpec:
    clients: int
    seconds: float
    mode: str  # "uniform" or "hot"
    account_ids: tuple[str, ...]
    amount_max: int = 100
    batch: int = 1  # 1: the `transfer` mutation; K > 1: `transferBatch` with K items
    atomic: bool = False
    by_id: bool = False  # documentId instead of the document's text
    seed: int = 1
    operation: str = "transfer"  # one of operations.OPERATIONS
    client: str = "http1"  # or "aiohttp"


@dataclass
class LoadStats:
    requests: int = 0
    committed: int = 0
    committed_amount: int = 0
    refused: int = 0
    failed: int = 0
    refused_by_code: Counter[str] = field(default_factory=Counter)
    failed_by_kind: Counter[str] = field(default_factory=Counter)
    failure_samples: dict[str, str] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def fail(self, kind: str, sample: str, items: int) -> None:
        self.failed += items
        self.failed_by_kind[kind] += items
        self.failure_samples.setdefault(kind, sample[:300])

    def summary(self) -> dict[str, Any]:
        elapsed = max(self.elapsed_s, 1e-9)
        return {
            "tps": round(self.committed / elapsed, 1),
            "requests": self.requests,
            "committed": self.committed,
            "committed_amount": self.committed_amount,
            "refused": self.refused,
            "refused_by_code": dict(self.refused_by_code),
            "failed": self.failed,
            "failed_by_kind": dict(self.failed_by_kind),
            "failure_samples": self.failure_samples,
            "elapsed_s": round(self.elapsed_s, 3),
            "latency_ms": latency_summary(self.latencies_s),
        }


def latency_summary(latencies_s: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/mean/max in milliseconds (nearest-rank percentiles)."""
    if not latencies_s:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    ordered = sorted(latencies_s)

    def rank(p: float) -> float:
        index = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
        return round(ordered[index] * 1000, 2)

    return {
        "p50": rank(50),
        "p95": rank(95),
        "p99": rank(99),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def _error_kind(errors: list[dict[str, Any]]) -> str:
    code = (errors[0].get("extensions") or {}).get("code", "NO_CODE")
    return f"graphql:{code}"


def classify(
    stats: LoadStats, spec: LoadSpec, status: int, raw: bytes, amounts: tuple[int, ...]
) -> bool:
    """Count one answer; True when it was a success at the HTTP and GraphQL level."""
    items = len(amounts)
    if status != 200:
        stats.fail(f"http:{status}", raw.decode(errors="replace"), items)
        return False
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        stats.fail("bad-json", raw.decode(errors="replace"), items)
        return False
    if body.get("errors"):
        stats.fail(_error_kind(body["errors"]), str(body["errors"][0].get("message")), items)
        return False
    payload, results, top_errors = answers(spec.operation, spec.batch, body.get("data") or {})
    if top_errors:
        # The whole batch was refused (atomic): nothing of it committed.
        stats.refused += items
        stats.refused_by_code[f"batch:{top_errors[0].get('code')}"] += items
        return True
    for result, amount in zip(results, amounts, strict=False):
        errors = result.get("errors") or []
        if errors:
            stats.refused += 1
            stats.refused_by_code[str(errors[0].get("code"))] += 1
        else:
            stats.committed += 1
            stats.committed_amount += amount
    missing = items - len(results)
    if missing > 0:
        stats.fail("missing-results", orjson.dumps(payload).decode(), missing)
    return True


Post = Callable[[bytes], Awaitable[tuple[int, bytes]]]
POST_FAILURES = (aiohttp.ClientError, OSError, TimeoutError)


async def _client(
    post_body: Post, spec: LoadSpec, deadline: float, stats: LoadStats, requests: RequestMaker
) -> None:
    for _ in range(REQUESTS_PER_CLIENT_MAX):
        if time.perf_counter() >= deadline:
            return
        request = requests.next()
        started = time.perf_counter()
        try:
            status, raw = await post_body(request.body)
        except POST_FAILURES as exc:
            stats.requests += 1
            stats.fail(type(exc).__name__, str(exc), len(request.amounts))
            # A server that is gone answers at once: do not spin on it.
            await asyncio.sleep(ERROR_BACKOFF_S)
            continue
        latency = time.perf_counter() - started
        stats.requests += 1
        if classify(stats, spec, status, raw, request.amounts):
            stats.latencies_s.append(latency)


def _aiohttp_post(session: aiohttp.ClientSession, url: str) -> Post:
    headers = auth.headers()

    async def post_body(body: bytes) -> tuple[int, bytes]:
        async with session.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.read()

    return post_body


async def _clients(url: str, spec: LoadSpec, stack: contextlib.AsyncExitStack) -> list[Post]:
    """One way to post per client, closed with `stack`."""
    if spec.client == "aiohttp":
        connector = aiohttp.TCPConnector(limit=spec.clients, force_close=False)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        await stack.enter_async_context(session)
        return [_aiohttp_post(session, url)] * spec.clients
    clients = [http1.Client(url, auth.headers(), REQUEST_TIMEOUT_S) for _ in range(spec.clients)]
    for client in clients:
        stack.callback(client.close)
    return [c.post for c in clients]


async def run_load(base_url: str, spec: LoadSpec) -> LoadStats:
    """Run C clients against POST /graphql until the deadline; every answer is counted."""
    assert 1 <= spec.batch <= BATCH_SIZE_MAX
    assert len(spec.account_ids) >= 2
    stats = LoadStats()
    url = f"{base_url}/graphql"
    # Idempotency keys unique across runs too: a --target server keeps them.
    key_prefix = f"bench-{secrets.token_hex(4)}"
    async with contextlib.AsyncExitStack() as stack:
        posts = await _clients(url, spec, stack)
        started = time.perf_counter()
        deadline = started + spec.seconds
        async with asyncio.timeout(spec.seconds + REQUEST_TIMEOUT_S + 5):
            await asyncio.gather(
                *(
                    _client(post_body, spec, deadline, stats, _requests(spec, key_prefix, i))
                    for i, post_body in enumerate(posts)
                )
            )
        stats.elapsed_s = time.perf_counter() - started
    return stats


def _requests(spec: LoadSpec, key_prefix: str, client: int) -> RequestMaker:
    return RequestMaker(
        operation=spec.operation,
        mode=spec.mode,
        account_ids=spec.account_ids,
        amount_max=spec.amount_max,
        batch=spec.batch,
        atomic=spec.atomic,
        by_id=spec.by_id,
        rng=random.Random(spec.seed * 1000 + client),
        key_prefix=f"{key_prefix}-{client}",
    )


async def post(
    session: aiohttp.ClientSession, url: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One GraphQL request; raises on HTTP or GraphQL errors."""
    payload = orjson.dumps({"query": query, "variables": variables or {}})
    async with session.post(url, data=payload, headers=auth.headers()) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {raw[:300]!r}")
    body: dict[str, Any] = orjson.loads(raw)
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body


async def open_accounts(base_url: str, ids: tuple[str, ...], deposit: int) -> None:
    """createAccount + deposit for each id, over GraphQL, a few at a time."""
    url = f"{base_url}/graphql"
    semaphore = asyncio.Semaphore(SETUP_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async def open_one(session: aiohttp.ClientSession, account_id: str) -> None:
        async with semaphore:
            body = await post(session, url, OPEN_ACCOUNT, {"id": account_id, "amount": deposit})
        data = body["data"]
        refusals = data["createAccount"]["errors"] + data["deposit"]["errors"]
        if refusals:
            raise RuntimeError(f"opening account {account_id} refused: {refusals}")

    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with asyncio.timeout(60 + len(ids)):
            await asyncio.gather(*(open_one(session, i) for i in ids))


async def has_mutation(base_url: str, name: str) -> bool | None:
    """Does the schema have this mutation field? None when introspection is refused."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            body = await post(session, f"{base_url}/graphql", MUTATION_FIELDS)
        except RuntimeError:
            return None
    fields = body["data"]["__schema"]["mutationType"]["fields"]
    return any(f["name"] == name for f in fields)


def field_missing(stats: LoadStats) -> bool:
    """Did the server answer that transferBatch does not exist (when introspection is off)?"""
    return (
        any(
            "transferBatch" in sample or "TransferBatch" in sample
            for kind, sample in stats.failure_samples.items()
            if kind == "graphql:GRAPHQL_VALIDATION_FAILED"
        )
        and stats.committed == 0
    )


async def balances_over_graphql(base_url: str, ids: tuple[str, ...]) -> int:
    """Sum of the balances of `ids`, read in one snapshot (one request)."""
    aliases = " ".join(f"a{n}: account(id: $i{n}) {{ balance }}" for n in range(len(ids)))
    params = ", ".join(f"$i{n}: ID!" for n in range(len(ids)))
    query = f"query Balances({params}) {{ {aliases} }}"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        body = await post(
            session, f"{base_url}/graphql", query, {f"i{n}": i for n, i in enumerate(ids)}
        )
    return sum(int(account["balance"]) for account in body["data"].values())
