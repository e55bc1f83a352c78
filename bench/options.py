"""The command line of `python -m bench.run`."""

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.infra import REPO
from bench.operations import OPERATIONS

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_RESULTS = REPO / "bench" / "results" / "results.jsonl"
PHASES = ("graphql", "raw", "deep")
MODES = ("uniform", "hot")


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _names(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        for name in names:
            if name not in allowed:
                raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(allowed)}")
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Load benchmark of bank_graphql: writes over GraphQL vs raw-SQL transfers, "
        "the server's CPU per operation, and deep ledger pages.",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL server on which the bench creates (and drops) its databases "
        f"(env BENCH_DATABASE_URL, default {DEFAULT_DATABASE_URL})",
    )
    p.add_argument(
        "--target",
        metavar="URL",
        help="benchmark this running server (e.g. http://127.0.0.1:8000) instead of starting "
        "one per cell; --workers is then ignored",
    )
    p.add_argument(
        "--target-database-url",
        metavar="URL",
        help="the database of --target, to run audit_books on it after each cell",
    )
    p.add_argument("--workers", type=_ints, default=[1, 2], help="server workers (default 1,2)")
    p.add_argument("--clients", type=_ints, default=[1, 8, 32], help="default 1,8,32")
    p.add_argument("--modes", type=_names(MODES), default=list(MODES), help="uniform,hot")
    p.add_argument(
        "--operations",
        type=_names(OPERATIONS),
        default=["transfer"],
        help="writes to measure, each a cell: transfer, keyed-transfer (a fresh idempotencyKey "
        "per request), deposit, pay (default transfer)",
    )
    p.add_argument(
        "--batch",
        type=_ints,
        default=[1],
        help="transfers per request: 1 = the transfer mutation, K > 1 = transferBatch with K "
        "items (transfer and keyed-transfer only); a list runs each (default 1)",
    )
    p.add_argument("--atomic", action="store_true", help="transferBatch with atomic: true")
    p.add_argument(
        "--by-id",
        action="store_true",
        help="send each document by its id (documentId), not its text (trusted documents)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="per cell (default 10)")
    p.add_argument("--accounts", type=int, default=100, help="default 100")
    p.add_argument(
        "--deposit", type=int, default=1_000_000, help="opening deposit per account, cents"
    )
    p.add_argument("--amount-max", type=int, default=100, help="amounts are 1..this cents")
    p.add_argument(
        "--phases",
        type=_names(PHASES),
        default=list(PHASES),
        help="any of graphql,raw,deep (default all)",
    )
    p.add_argument(
        "--raw-driver",
        choices=["auto", "pgbench", "psycopg"],
        default="auto",
        help="raw-SQL client: pgbench when found (auto), or psycopg",
    )
    p.add_argument("--deep-entries", type=int, default=100_000)
    p.add_argument("--deep-depth", type=int, default=10_000)
    p.add_argument("--deep-samples", type=int, default=50)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON lines, appended")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server, e.g. BANK_POOL_MAX_SIZE=32 (repeatable)",
    )
    p.add_argument(
        "--server-ref",
        metavar="GIT_REF",
        help="run the server (and the schema, the audit) of this commit, e.g. HEAD, exported "
        "to a temporary folder, instead of the working tree: a stable target while others "
        "edit, and comparable runs",
    )
    p.add_argument(
        "--auth",
        choices=["on", "off"],
        default="on",
        help="access control on the bench's servers (default on: each cell makes an ADMIN "
        "key; off: serve --no-auth), to measure what the check costs",
    )
    p.add_argument(
        "--token", help="the credential (API key or JWT) for a --target server, if it needs one"
    )
    p.add_argument(
        "--server-log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="the server's --log-level (default warning: no line per request)",
    )
    p.add_argument(
        "--quiet-cores",
        type=float,
        default=0.0,
        metavar="CORES",
        help="before each cell, wait until the machine is busy for under CORES cores (the "
        "machine is shared: someone else's tests skew a cell); 0 = do not wait (default)",
    )
    p.add_argument(
        "--quiet-wait-s", type=float, default=120.0, help="longest wait for --quiet-cores"
    )
    p.add_argument(
        "--client",
        choices=["http1", "aiohttp"],
        default="http1",
        help="the GraphQL load's HTTP client: http1 (lean, httptools; default) or aiohttp",
    )
    p.add_argument("--seed", type=int, default=1)
    return p
