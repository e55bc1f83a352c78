"""Deep pages: does a page 10,000 entries deep cost what the first page costs?

One account gets 100,000 DEPOSIT entries straight through SQL (one INSERT over
generate_series, balance_after a running sum), then GraphQL reads are timed one at a time.
"""

import statistics
import time
from typing import Any

import aiohttp
import orjson
import psycopg

from bench import auth
from bench.aio import run_async
from bench.checks import audit_only
from bench.context import Context, migrate, quiet_machine
from bench.infra import Server
from bench.load import REQUEST_TIMEOUT_S, latency_summary

DEEP_ACCOUNT = "deep"
WALK_PAGE_SIZE = 100
WALK_PAGES_MAX = 10_000

PAGE = """query Page($id: ID!, $first: Int, $after: String, $last: Int) {
  account(id: $id) {
    transactions(first: $first, after: $after, last: $last) {
      edges { cursor node { id timestamp kind amount balanceAfter } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}"""
BALANCE = "query Balance($id: ID!, $at: Timestamp) { account(id: $id) { balance(at: $at) } }"
CURSOR_ONLY = """query Walk($id: ID!, $first: Int, $after: String) {
  account(id: $id) { transactions(first: $first, after: $after) { pageInfo { endCursor } } }
}"""


def seed_deep_account(conninfo: str, entries: int) -> dict[str, int]:
    """Account `deep` with `entries` deposits, 1 ms apart, ending one second ago.

    Amounts cycle 1..100 so that a wrong balance_after would show; entry ids follow
    timestamps because the rows are inserted in order.
    """
    now_ms = time.time_ns() // 1_000_000
    created_at = now_ms - entries - 1000
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.transaction():
        conn.execute(
            """INSERT INTO accounts (id, created_at, last_entry_at, survivor_id)
               VALUES (%(id)s, %(t0)s, %(t0)s, %(id)s)""",
            {"id": DEEP_ACCOUNT, "t0": created_at},
        )
        conn.execute(
            """INSERT INTO entries (account_id, ts, kind, amount, balance_after)
               SELECT %(id)s, %(t0)s + i, 'DEPOSIT', 1 + i %% 100,
                      sum(1 + i %% 100) OVER (ORDER BY i)
               FROM generate_series(1, %(n)s) AS i
               ORDER BY i""",
            {"id": DEEP_ACCOUNT, "t0": created_at, "n": entries},
        )
        row = conn.execute(
            """UPDATE accounts a SET balance = last.balance_after, last_entry_at = last.ts
               FROM (SELECT balance_after, ts FROM entries WHERE account_id = %(id)s
                     ORDER BY ts DESC, id DESC LIMIT 1) AS last
               WHERE a.id = %(id)s
               RETURNING a.balance, a.last_entry_at""",
            {"id": DEEP_ACCOUNT},
        ).fetchone()
        assert row is not None
        conn.execute("ANALYZE entries")
        conn.execute("ANALYZE accounts")
    return {"created_at": created_at, "last_ts": int(row[1]), "balance": int(row[0])}


async def _post(
    session: aiohttp.ClientSession, url: str, query: str, variables: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    payload = orjson.dumps({"query": query, "variables": variables})
    started = time.perf_counter()
    async with session.post(url, data=payload, headers=auth.headers()) as resp:
        raw = await resp.read()
    latency = time.perf_counter() - started
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {raw[:300]!r}")
    body: dict[str, Any] = orjson.loads(raw)
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return latency, body


async def _timed(
    session: aiohttp.ClientSession,
    url: str,
    query: str,
    variables: dict[str, Any],
    samples: int,
    warmup: int = 3,
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """`samples` sequential requests after a warm-up; latency summary and the last answer."""
    body: dict[str, Any] = {}
    for _ in range(warmup):
        _, body = await _post(session, url, query, variables)
    latencies = []
    for _ in range(samples):
        latency, body = await _post(session, url, query, variables)
        latencies.append(latency)
    summary = latency_summary(latencies)
    summary["median"] = round(statistics.median(latencies) * 1000, 2)
    return summary, body


async def measure_deep_pages(
    base_url: str, seeded: dict[str, int], depth: int, samples: int
) -> dict[str, Any]:
    """Median latencies of: first page, a page `depth` deep, last page, balance(at)."""
    url = f"{base_url}/graphql"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # The cursor of entry number `depth`: walk there once, 100 entries a page.
        cursor: str | None = None
        walked = 0
        walk_started = time.perf_counter()
        for _ in range(min(WALK_PAGES_MAX, depth // WALK_PAGE_SIZE)):
            _, body = await _post(
                session,
                url,
                CURSOR_ONLY,
                {"id": DEEP_ACCOUNT, "first": WALK_PAGE_SIZE, "after": cursor},
            )
            cursor = body["data"]["account"]["transactions"]["pageInfo"]["endCursor"]
            walked += WALK_PAGE_SIZE
        walk_s = time.perf_counter() - walk_started

        first, first_body = await _timed(
            session, url, PAGE, {"id": DEEP_ACCOUNT, "first": 50}, samples
        )
        deep, deep_body = await _timed(
            session, url, PAGE, {"id": DEEP_ACCOUNT, "first": 50, "after": cursor}, samples
        )
        last, _ = await _timed(session, url, PAGE, {"id": DEEP_ACCOUNT, "last": 50}, samples)
        middle_at = seeded["created_at"] + (seeded["last_ts"] - seeded["created_at"]) // 2
        bal_latest, latest_body = await _timed(
            session, url, BALANCE, {"id": DEEP_ACCOUNT, "at": seeded["last_ts"]}, samples
        )
        bal_middle, _ = await _timed(
            session, url, BALANCE, {"id": DEEP_ACCOUNT, "at": middle_at}, samples
        )

    first_edges = first_body["data"]["account"]["transactions"]["edges"]
    deep_edges = deep_body["data"]["account"]["transactions"]["edges"]
    checks = {
        "first_page_starts_at_entry_1": bool(first_edges)
        and first_edges[0]["node"]["timestamp"] == seeded["created_at"] + 1,
        "deep_page_starts_after_depth": bool(deep_edges)
        and deep_edges[0]["node"]["timestamp"] == seeded["created_at"] + walked + 1,
        "latest_balance_matches": latest_body["data"]["account"]["balance"] == seeded["balance"],
    }
    return {
        "depth": walked,
        "walk_s": round(walk_s, 2),
        "first_page_ms": first,
        "deep_page_ms": deep,
        "last_page_ms": last,
        "balance_latest_ms": bal_latest,
        "balance_middle_ms": bal_middle,
        "deep_over_first": round(deep["median"] / first["median"], 2)
        if deep["median"] and first["median"]
        else None,
        "checks": checks,
    }


def deep_pages_phase(ctx: Context) -> dict[str, Any]:
    """Seed the deep account, serve it with one worker, time the reads, audit the seed."""
    args = ctx.args
    db = ctx.databases.create("deep")
    server: Server | None = None
    try:
        migrate(db)
        seeded = seed_deep_account(db, args.deep_entries)
        audit = run_async(audit_only(db))
        server = Server(
            db,
            1,
            ctx.log_dir / "server-deep.log",
            env=ctx.server_env,
            log_level=args.server_log_level,
            auth=args.auth == "on",
        )
        base_url = server.start()
        quiet = quiet_machine(args)
        measured = run_async(
            measure_deep_pages(base_url, seeded, args.deep_depth, args.deep_samples)
        )
    finally:
        if server is not None:
            server.stop()
        ctx.databases.drop(db)
    row = ctx.record(
        {
            "kind": "deep_pages",
            "entries": args.deep_entries,
            "samples": args.deep_samples,
            "seed_audit_problems": audit[:10],
            **measured,
            **quiet,
        }
    )
    if audit or not all(measured["checks"].values()):
        ctx.errors += 1
    return row
