"""`python -m bench.live`: how long a committed transfer takes to reach its subscribers, and
what having subscribers costs the write path.

Cells, each on a fresh database and server: closed-loop transfers without subscribers and
with them (the cost); open-loop transfers at --rate with the subscribers (the latency); the
same with --idle-subs idle subscriptions open besides. A latency cell that cannot reach
--rate is run again at the rate the machine sustained with subscribers (closed loop).
"""

import argparse
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import live_report
from bench.context import Context
from bench.infra import Databases
from bench.live_cells import LiveCell, live_cell
from bench.live_writer import Pacing
from bench.options import DEFAULT_DATABASE_URL, DEFAULT_RESULTS, _names
from bench.run import _guarded, close_run, run_as_main

CELLS = ("throughput", "latency", "idle")
RESULTS = DEFAULT_RESULTS.parent / "live.jsonl"
REACHED = 0.95  # a latency cell reached its rate when it committed this share of it


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.live",
        description="Delivery latency of live subscriptions (commit to subscriber) and their "
        "cost to transfers/s.",
    )
    p.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    p.add_argument("--workers", type=int, default=1, help="server workers (default 1)")
    p.add_argument("--cells", type=_names(CELLS), default=list(CELLS), help="default all")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop transfers/s (500)")
    p.add_argument("--clients", type=int, default=32, help="closed-loop clients (32)")
    p.add_argument("--seconds", type=float, default=10.0, help="of load per cell (10)")
    p.add_argument("--ledger-subs", type=int, default=50, help="ledgerEntries subscriptions")
    p.add_argument(
        "--account-subs", type=int, default=50, help="accountEntries on accounts a1.. (50)"
    )
    p.add_argument(
        "--idle-subs", type=int, default=1000, help="accountEntries on unwritten accounts"
    )
    p.add_argument("--feed-procs", type=int, default=2, help="processes for the active subs")
    p.add_argument("--accounts", type=int, default=100, help="accounts the load moves money among")
    p.add_argument("--deposit", type=int, default=1_000_000_000, help="per account, cents")
    p.add_argument("--drain-s", type=float, default=15.0, help="longest wait for late events")
    p.add_argument(
        "--fallback-fraction",
        type=float,
        default=0.9,
        help="a latency cell short of --rate runs again at this share of the closed-loop "
        "rate with subscribers (default 0.9)",
    )
    p.add_argument("--auth", choices=["on", "off"], default="on")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--server-ref", metavar="GIT_REF", help="as in python -m bench.run")
    p.add_argument("--server-log-level", default="warning")
    p.add_argument("--quiet-cores", type=float, default=0.0)
    p.add_argument("--quiet-wait-s", type=float, default=120.0)
    p.add_argument("--results", type=Path, default=RESULTS, help="JSON lines, appended")
    return p


def _cell(ctx: Context, cell: LiveCell) -> dict[str, Any] | None:
    row = _guarded(ctx, lambda: live_cell(ctx, cell))
    if row is not None:
        print(live_report.format_row(row), flush=True)
    return row


def _latency_cells(ctx: Context, idle: int, fed_max: float | None) -> None:
    args = ctx.args
    subs = (args.ledger_subs, args.account_subs, idle)
    row = _cell(ctx, LiveCell("latency", *subs, Pacing(args.seconds, rate=args.rate)))
    if row is None or fed_max is None or row["tps"] >= REACHED * args.rate:
        return
    fallback = max(10.0, (fed_max * args.fallback_fraction) // 10 * 10)
    if fallback < args.rate:
        _cell(ctx, LiveCell("latency", *subs, Pacing(args.seconds, rate=fallback)))


def run(args: argparse.Namespace) -> int:
    run_id = secrets.token_hex(3)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-live-logs-"))
    server_env = dict(item.split("=", 1) for item in args.server_env)
    ctx = Context(args, run_id, Databases(args.database_url, run_id), log_dir, server_env)
    print(f"bench live run {run_id}: results -> {args.results}", flush=True)
    live_report.print_header()
    fed_max: float | None = None
    try:
        if "throughput" in args.cells:
            pacing = Pacing(args.seconds, clients=args.clients)
            _cell(ctx, LiveCell("throughput", 0, 0, 0, pacing))
            fed = _cell(ctx, LiveCell("throughput", args.ledger_subs, args.account_subs, 0, pacing))
            fed_max = fed["tps"] if fed else None
        if "latency" in args.cells:
            _latency_cells(ctx, 0, fed_max)
        if "idle" in args.cells:
            _latency_cells(ctx, args.idle_subs, fed_max)
    finally:
        close_run(ctx, log_dir)
    live_report.print_summary(ctx.rows)
    return 1 if ctx.errors else 0


def main(argv: Sequence[str] | None = None) -> None:
    run_as_main(argv, build_parser(), run, "bench.live")


if __name__ == "__main__":
    main()
