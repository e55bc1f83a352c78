"""One cell of the live benchmark: a fresh database and server, subscriber processes, the
subscriptions woken, transfers sent, the feeds drained and joined with the commits.
"""

import contextlib
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

from bench import auth, checks, load, raw_sql
from bench.aio import run_async
from bench.cells import per_op_us
from bench.context import Context, quiet_machine
from bench.cpu import CpuMeter
from bench.infra import Server, database_name
from bench.live_feed import Commits, FeedConfig, feed_main
from bench.live_writer import Pacing, Writer, Writes, warm_writes

FIRST_AMOUNT = 1000  # load transfers move 1000, 1001, ... cents; warm-up writes move 1
IDLE_PER_CONNECTION = 10
IDLE_DEPOSIT = 1
SUBSCRIBED_TIMEOUT_S = 120.0
WARM_TIMEOUT_S = 120.0
RESULT_GRACE_S = 120.0
DRAIN_QUIET_S = 5.0  # a feed with nothing new for this long has delivered what it will
IDLE_WINDOW_S = 2.0  # server CPU measured with the subscriptions open and no writes
WARM_ROUND_S = 3.0  # between two rounds of warm-up writes to the subscriptions still cold


@dataclass(frozen=True, slots=True)
class LiveCell:
    name: str  # "throughput" or "latency"
    ledger_subs: int
    account_subs: int
    idle_subs: int
    pacing: Pacing

    @property
    def label(self) -> str:
        pace = f"r{int(self.pacing.rate)}" if self.pacing.rate else f"c{self.pacing.clients}"
        return f"{self.name}_{pace}_s{self.ledger_subs + self.account_subs}_i{self.idle_subs}"


@dataclass
class FeedProc:
    proc: BaseProcess
    conn: Connection
    idle: bool
    status: tuple[list[str], int] | None = None  # its cold accounts and ledger feeds
    cpu_start: float = 0.0
    cpu_s: float = 0.0

    def cpu(self) -> float:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(self.proc.pid).cpu_times()
            return float(times.user + times.system)
        return 0.0


def _feed_configs(
    ctx: Context, cell: LiveCell, base_url: str, ids: tuple[str, ...], idle: bool
) -> list[FeedConfig]:
    """The idle subscriptions' process, or the active ones spread over --feed-procs."""
    header = auth.headers().get("Authorization")
    ws_url = base_url.replace("http://", "ws://") + "/graphql"
    if idle:
        subs = tuple(_idle_ids(cell.idle_subs))
        return [FeedConfig(ws_url, header, subs, IDLE_PER_CONNECTION, FIRST_AMOUNT)] if subs else []
    active: list[str | None] = [None] * cell.ledger_subs
    active += [ids[i % len(ids)] for i in range(cell.account_subs)]
    procs = max(1, ctx.args.feed_procs)
    return [
        FeedConfig(ws_url, header, tuple(active[n::procs]), 1, FIRST_AMOUNT)
        for n in range(procs)
        if active[n::procs]
    ]


def _start_feeds(
    configs: list[FeedConfig], idle: bool, stack: contextlib.ExitStack
) -> list[FeedProc]:
    spawn = multiprocessing.get_context("spawn")
    feeds: list[FeedProc] = []
    stack.callback(_stop_feeds, feeds)
    for config in configs:
        parent, child = spawn.Pipe()
        proc = spawn.Process(target=feed_main, args=(child, config), daemon=True)
        proc.start()
        child.close()
        feeds.append(FeedProc(proc, parent, idle))
    _wait_subscribed(feeds)
    return feeds


def _idle_ids(count: int) -> list[str]:
    return [f"idle{i}" for i in range(1, count + 1)]


def _stop_feeds(feeds: list[FeedProc]) -> None:
    for feed in feeds:
        feed.conn.close()  # a child still waiting for a command reads EOF and leaves
    for feed in feeds:
        feed.proc.join(10)
        if feed.proc.is_alive():
            feed.proc.terminate()
            feed.proc.join(5)


def _message(feed: FeedProc, timeout_s: float) -> tuple[Any, ...] | None:
    if not feed.conn.poll(timeout_s):
        return None
    message: tuple[Any, ...] = feed.conn.recv()
    if message[0] == "failed":
        raise RuntimeError(f"subscriber process failed: {message[1]}")
    return message


def _wait_subscribed(feeds: list[FeedProc]) -> None:
    for feed in feeds:
        message = _message(feed, SUBSCRIBED_TIMEOUT_S)
        if message is None or message[0] != "subscribed":
            raise RuntimeError(f"subscriber process not subscribed: {message}")


def _warm_up(feeds: list[FeedProc], base_url: str, ids: tuple[str, ...]) -> tuple[int, int]:
    """Write to every account whose subscription saw nothing yet until each has (the protocol
    does not acknowledge a subscribe). Returns the warm-up transfers and deposits."""
    deadline = time.monotonic() + WARM_TIMEOUT_S
    transfers = deposits = 0
    while time.monotonic() < deadline:
        for feed in feeds:
            while (message := _message(feed, 0)) is not None:
                if message[0] in ("cold-timeout", "ended"):
                    raise RuntimeError(f"subscriptions did not start: {message}")
                feed.status = ([], 0) if message[0] == "warm" else (message[1], message[2])
        if any(feed.status is None for feed in feeds):
            time.sleep(0.1)
            continue
        if all(feed.status == ([], 0) for feed in feeds):
            return transfers, deposits
        cold = [a for f in feeds if f.status and not f.idle for a in f.status[0]]
        idle = [a for f in feeds if f.status and f.idle for a in f.status[0]]
        if not cold and any(f.status and f.status[1] for f in feeds):
            cold = [ids[0]]
        pairs = [(ids[-1] if target != ids[-1] else ids[0], target) for target in cold]
        done = run_async(warm_writes(base_url, pairs, idle))
        transfers, deposits = transfers + done[0], deposits + done[1]
        time.sleep(WARM_ROUND_S)
    raise RuntimeError("subscriptions did not all wake in time")


def _drain(feeds: list[FeedProc], commits: Commits, drain_s: float) -> list[dict[str, Any]]:
    for feed in feeds:
        feed.conn.send(("drain", commits if not feed.idle else {}, DRAIN_QUIET_S, drain_s))
    results = []
    for feed in feeds:
        message = _message(feed, drain_s + RESULT_GRACE_S)
        if message is None or message[0] != "result":
            raise RuntimeError(f"no result from a subscriber process: {message}")
        results.append({**message[1], "idle": feed.idle})
    return results


def _resting_cores(server: Server) -> float:
    """The server's cores while the subscriptions are open and nothing is written."""
    meter = CpuMeter(server.pids())
    meter.start()
    time.sleep(IDLE_WINDOW_S)
    return meter.stop()["server"]


def live_cell(ctx: Context, cell: LiveCell) -> dict[str, Any]:
    args = ctx.args
    ids = raw_sql.account_ids(args.accounts)
    with contextlib.ExitStack() as stack:
        db = ctx.databases.create(f"live_{cell.label}")
        stack.callback(ctx.databases.drop, db)
        server = Server(
            db,
            args.workers,
            ctx.log_dir / f"server-live-{cell.label}.log",
            env=ctx.server_env,
            log_level=args.server_log_level,
            auth=args.auth == "on",
        )
        stack.callback(server.stop)
        base_url = server.start()
        run_async(load.open_accounts(base_url, ids, args.deposit))
        if cell.idle_subs:
            run_async(load.open_accounts(base_url, tuple(_idle_ids(cell.idle_subs)), IDLE_DEPOSIT))
        # Idle ones first: their warm-up deposits then reach no ledgerEntries subscriber.
        idle = _start_feeds(_feed_configs(ctx, cell, base_url, ids, True), True, stack)
        _, warm_deposits = _warm_up(idle, base_url, ids)
        active = _start_feeds(_feed_configs(ctx, cell, base_url, ids, False), False, stack)
        warm_transfers, _ = _warm_up(active, base_url, ids)
        feeds = idle + active
        quiet = quiet_machine(args)
        resting = _resting_cores(server)
        meter = CpuMeter(server.pids(), database=database_name(db))
        meter.start()
        for feed in feeds:
            feed.cpu_start = feed.cpu()
        writes = run_async(Writer(base_url, ids, FIRST_AMOUNT).run(cell.pacing))
        cpu = meter.stop()
        for feed in feeds:
            feed.cpu_s = feed.cpu() - feed.cpu_start
        results = _drain(feeds, writes.commits, args.drain_s)
        expected = len(ids) * args.deposit + cell.idle_subs * IDLE_DEPOSIT + warm_deposits
        books = run_async(checks.check_books(db, expected, "TRANSFER_OUT", warm_transfers))
    wall = max(writes.stats.elapsed_s, 1e-9)
    feeds_cores = sum(f.cpu_s for f in feeds) / wall
    measured = {"server_cores_no_writes": resting, **quiet}
    return _row(ctx, cell, writes, results, books, meter, cpu, feeds_cores, measured)


def _row(
    ctx: Context,
    cell: LiveCell,
    writes: Writes,
    results: list[dict[str, Any]],
    books: checks.BooksCheck,
    meter: CpuMeter,
    cpu: dict[str, float],
    feeds_cores: float,
    quiet: dict[str, float],
) -> dict[str, Any]:
    summary = writes.stats.summary()
    active = [r for r in results if not r["idle"]]
    latencies = [x for r in active for x in r["latencies"]]
    delivery = load.latency_summary(latencies)
    delivery["min"] = round(min(latencies) * 1000, 2) if latencies else None
    totals = {
        k: sum(r[k] for r in active)
        for k in ("subs", "events", "expected", "missing", "duplicates", "unknown", "id_mismatch")
    }
    feed_errors: dict[str, int] = {}
    for result in results:
        for code, count in result["errors"].items():
            feed_errors[code] = feed_errors.get(code, 0) + count
    cores = {**cpu, "feeds": round(feeds_cores, 2)}
    cores["client"] = round(cpu.get("bench", 0.0) + feeds_cores, 2)
    cores["other"] = round(max(0.0, cpu.get("other", 0.0) - feeds_cores), 2)
    counted = books.operation_entries == summary["committed"]
    books_ok = books.ok and (counted or summary["failed"] > 0)
    row = ctx.record(
        {
            "kind": "live",
            "cell": cell.name,
            "workers": ctx.args.workers,
            "ledger_subs": cell.ledger_subs,
            "account_subs": cell.account_subs,
            "idle_subs": cell.idle_subs,
            "target_rate": cell.pacing.rate,
            "clients": None if cell.pacing.rate else cell.pacing.clients,
            "seconds": cell.pacing.seconds,
            "auth": ctx.args.auth,
            **summary,
            "late_requests": writes.late,
            "unsent_requests": writes.unsent,
            "lag_max_ms": round(writes.lag_max_s * 1000, 1),
            "delivery_ms": delivery,
            "deliveries": len(latencies),
            **totals,
            "feed_errors": feed_errors,
            "short_subs": [s for r in results for s in r["short_subs"]][:10],
            "ended_subs": sum(r["ended"] for r in results),
            "resumes": sum(r["resumes"] for r in results),
            "idle_events": sum(r["events"] for r in results if r["idle"]),
            **books.as_dict(),
            "ledger_matches_answers": counted,
            "books_ok": books_ok,
            "server_cpu_us_per_op": per_op_us(meter.seconds["server"], summary["committed"]),
            "pg_cpu_us_per_op": per_op_us(meter.seconds["postgres_db"], summary["committed"]),
            "cpu_cores": cores,
            **quiet,
        }
    )
    if not books_ok:
        ctx.errors += 1
    return row
