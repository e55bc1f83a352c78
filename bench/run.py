"""`python -m bench.run`: the transfer matrix, its raw-SQL reference and the deep-page test.

Each GraphQL cell gets a fresh database and its own `bank-graphql serve` process; each raw-SQL
cell a fresh database with the same schema. Every database is dropped and every server
stopped on the way out, whatever the way out is (the end, an error, Ctrl-C or SIGTERM).
"""

import argparse
import asyncio
import contextlib
import datetime
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import traceback
import urllib.parse
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from bench import deep_pages, load, raw_sql
from bench.infra import REPO, CpuMeter, Databases, Server, listening_pids, wait_for_quiet

T = TypeVar("T")

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_RESULTS = REPO / "bench" / "results" / "results.jsonl"
PHASES = ("graphql", "raw", "deep")
MODES = ("uniform", "hot")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
EXPORTED_TREE_ENV = "BENCH_EXPORTED_TREE"
SERVER_COMMIT_ENV = "BENCH_SERVER_COMMIT"
EXPORTED_PATHS = ("bank_graphql", "schema.sql", "pyproject.toml")


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through every `finally`: servers stopped, databases dropped.
    raise SystemExit(128 + signum)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one phase on uvloop when installed (the client must not be the bottleneck).

    SIGTERM/SIGHUP cancel the phase cleanly (an exception raised inside a transport callback
    would not), then leave as SystemExit like everywhere else.
    """

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def stop(signum: int) -> None:
            received.append(signum)
            task.cancel()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await coro
        except asyncio.CancelledError:
            if received:
                raise SystemExit(128 + received[0]) from None
            raise

    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(guarded())
        return uvloop.run(guarded())
    finally:
        # The loop put SIG_DFL back when it closed: restore the handler of the sync code.
        for signum in STOP_SIGNALS:
            signal.signal(signum, _exit_on_signal)


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
        description="Load benchmark of bank_graphql: transfers over GraphQL vs raw SQL, "
        "and deep ledger pages.",
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
        "--batch",
        type=_ints,
        default=[1],
        help="transfers per request: 1 = the transfer mutation, K > 1 = transferBatch with K "
        "items; a list runs each (default 1)",
    )
    p.add_argument("--atomic", action="store_true", help="transferBatch with atomic: true")
    p.add_argument("--seconds", type=float, default=10.0, help="per cell (default 10)")
    p.add_argument("--accounts", type=int, default=100, help="default 100")
    p.add_argument(
        "--deposit", type=int, default=1_000_000, help="opening deposit per account, cents"
    )
    p.add_argument("--amount-max", type=int, default=100, help="transfers are 1..this cents")
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
    p.add_argument("--seed", type=int, default=1)
    return p


@dataclass
class Context:
    args: argparse.Namespace
    run_id: str
    databases: Databases
    log_dir: Path
    server_env: dict[str, str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    raw_cache: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    errors: int = 0

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {
            "kind": row.pop("kind"),
            "run_id": self.run_id,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git": _git_commit(),
            "cpus": os.cpu_count(),
            **row,
        }
        self.args.results.parent.mkdir(parents=True, exist_ok=True)
        with self.args.results.open("a") as out:
            out.write(json.dumps(row, sort_keys=False) + "\n")
        self.rows.append(row)
        return row


def _git_commit() -> str | None:
    if os.environ.get(SERVER_COMMIT_ENV):
        return os.environ[SERVER_COMMIT_ENV]
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{'-dirty' if dirty else ''}"


# -- raw SQL -----------------------------------------------------------------------------


def raw_reference(ctx: Context, clients: int, mode: str) -> dict[str, Any]:
    """The raw-SQL transfer rate for this client count and mode (measured once per run)."""
    key = (clients, mode)
    if key in ctx.raw_cache:
        return ctx.raw_cache[key]
    args = ctx.args
    driver = args.raw_driver
    if driver == "auto":
        driver = "pgbench" if raw_sql.pgbench_path() else "psycopg"
    ids = raw_sql.account_ids(args.accounts)
    db = ctx.databases.create(f"raw_c{clients}_{mode}")
    try:
        migrate(db)
        raw_sql.seed_accounts(db, args.accounts, args.deposit)
        quiet = _wait_for_quiet(args)
        meter = CpuMeter()
        meter.start()
        if driver == "pgbench":
            result = raw_sql.run_pgbench(
                db, clients, args.seconds, mode, args.accounts, args.amount_max
            )
        else:
            result = run_async(
                raw_sql.run_psycopg(db, clients, args.seconds, mode, ids, args.amount_max)
            )
        cpu = meter.stop()
        books = run_async(load.check_books(db, args.accounts * args.deposit))
    finally:
        ctx.databases.drop(db)
    row = ctx.record(
        {
            "kind": "raw_sql",
            "clients": clients,
            "mode": mode,
            "seconds": args.seconds,
            "accounts": args.accounts,
            **result.as_dict(),
            **books.as_dict(),
            "cpu_cores": cpu,
            **quiet,
        }
    )
    if not books.ok:
        ctx.errors += 1
    ctx.raw_cache[key] = row
    _print_raw(row)
    return row


# -- GraphQL cells -------------------------------------------------------------------------


def graphql_cell(
    ctx: Context, workers: int | None, clients: int, mode: str, batch: int
) -> dict[str, Any]:
    args = ctx.args
    base = {
        "kind": "transfers",
        "workers": workers,
        "clients": clients,
        "mode": mode,
        "batch": batch,
        "atomic": args.atomic if batch > 1 else None,
        "seconds": args.seconds,
        "accounts": args.accounts,
        "target": args.target,
        "server_log_level": args.server_log_level,
        "server_env": ctx.server_env,
    }
    server: Server | None = None
    db: str | None = None
    try:
        if args.target:
            base_url = args.target.rstrip("/")
            prefix = f"b{ctx.run_id}c{len(ctx.rows)}-"
            ids = tuple(f"{prefix}{i}" for i in range(1, args.accounts + 1))
        else:
            assert workers is not None
            db = ctx.databases.create(f"gql_w{workers}_c{clients}_{mode}_b{batch}")
            log_path = ctx.log_dir / f"server-w{workers}-c{clients}-{mode}-b{batch}.log"
            server = Server(
                db, workers, log_path, env=ctx.server_env, log_level=args.server_log_level
            )
            base_url = server.start()
            ids = raw_sql.account_ids(args.accounts)
        run_async(load.open_accounts(base_url, ids, args.deposit))
        if batch > 1 and run_async(load.has_mutation(base_url, "transferBatch")) is False:
            return ctx.record({**base, "status": "not available"})
        spec = load.LoadSpec(
            clients=clients,
            seconds=args.seconds,
            mode=mode,
            account_ids=ids,
            amount_max=args.amount_max,
            batch=batch,
            atomic=args.atomic,
            seed=args.seed,
        )
        quiet = _wait_for_quiet(args)
        meter = CpuMeter(server.pids() if server else listening_pids(_port_of(base_url)))
        meter.start()
        stats = run_async(load.run_load(base_url, spec))
        cpu = meter.stop()
        if batch > 1 and load.field_missing(stats):
            return ctx.record({**base, "status": "not available"})
        books = _check_books(ctx, db, base_url, ids)
    finally:
        if server is not None:
            server.stop()
        if db is not None:
            ctx.databases.drop(db)
    summary = stats.summary()
    # Every transfer the clients were told committed is in the ledger, and no other: exact
    # unless some requests failed (a timed-out request may still have committed).
    counted = books.transfer_entries < 0 or books.transfer_entries == summary["committed"]
    books_ok = books.ok and (counted or summary["failed"] > 0)
    raw = ctx.raw_cache.get((clients, mode))
    raw_tps = raw["tps"] if raw else None
    row = ctx.record(
        {
            **base,
            "status": "ok",
            **summary,
            **books.as_dict(),
            "ledger_matches_answers": counted,
            "books_ok": books_ok,
            "raw_sql_tps": raw_tps,
            "ratio": round(summary["tps"] / raw_tps, 3) if raw_tps else None,
            "cpu_cores": cpu,
            **quiet,
        }
    )
    if not books_ok:
        ctx.errors += 1
        print(
            f"  books do NOT balance: {books.as_dict()}, committed {summary['committed']}",
            file=sys.stderr,
        )
    return row


def _wait_for_quiet(args: argparse.Namespace) -> dict[str, float]:
    if args.quiet_cores <= 0:
        return {}
    return wait_for_quiet(args.quiet_cores, args.quiet_wait_s)


def _port_of(base_url: str) -> int:
    parsed = urllib.parse.urlsplit(base_url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def _check_books(
    ctx: Context, db: str | None, base_url: str, ids: tuple[str, ...]
) -> load.BooksCheck:
    expected = len(ids) * ctx.args.deposit
    if db is not None:
        return run_async(load.check_books(db, expected))
    # A target server: our accounts' money over GraphQL, the audit when we may reach its db.
    total = run_async(load.balances_over_graphql(base_url, ids))
    problems: list[str] = []
    if ctx.args.target_database_url:
        problems = run_async(load.audit_only(ctx.args.target_database_url))
    return load.BooksCheck(tuple(problems), total, expected, -1)


# -- deep pages --------------------------------------------------------------------------


def deep_pages_phase(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    db = ctx.databases.create("deep")
    server: Server | None = None
    try:
        migrate(db)
        seeded = deep_pages.seed_deep_account(db, args.deep_entries)
        audit = run_async(load.audit_only(db))
        server = Server(
            db,
            1,
            ctx.log_dir / "server-deep.log",
            env=ctx.server_env,
            log_level=args.server_log_level,
        )
        base_url = server.start()
        quiet = _wait_for_quiet(args)
        measured = run_async(
            deep_pages.measure_deep_pages(base_url, seeded, args.deep_depth, args.deep_samples)
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


# -- output ------------------------------------------------------------------------------

_HEADER = (
    f"{'W':>2} {'C':>3} {'mode':<7} {'K':>3} | {'tps':>7} {'p50':>6} {'p95':>6} {'p99':>7}"
    f" {'refused':>7} {'failed':>6} | {'raw_tps':>7} {'ratio':>5} | {'books':<5}"
    " | cores bench/server/pg/other"
)


def _fmt(value: Any, width: int, digits: int = 1) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, float):
        return f"{value:>{width}.{digits}f}"
    return f"{value!s:>{width}}"


def format_row(row: dict[str, Any]) -> str:
    lead = f"{_fmt(row.get('workers'), 2)} {row['clients']:>3} {row['mode']:<7} {row['batch']:>3} |"
    if row.get("status") != "ok":
        return f"{lead} {row.get('status')}"
    lat = row["latency_ms"]
    cpu = row.get("cpu_cores") or {}
    return (
        f"{lead} {_fmt(row['tps'], 7)} {_fmt(lat['p50'], 6)} {_fmt(lat['p95'], 6)}"
        f" {_fmt(lat['p99'], 7)} {row['refused']:>7} {row['failed']:>6} |"
        f" {_fmt(row['raw_sql_tps'], 7)} {_fmt(row['ratio'], 5, 2)} |"
        f" {'pass' if row['books_ok'] else 'FAIL':<5} |"
        f" {cpu.get('bench', 0):.2f}/{cpu.get('server', 0):.2f}/{cpu.get('postgres', 0):.2f}"
        f"/{cpu.get('other', 0):.2f}"
    )


def _print_raw(row: dict[str, Any]) -> None:
    lat = row["latency_ms"]
    cpu = row["cpu_cores"]
    print(
        f"raw SQL ({row['driver']}) clients={row['clients']} {row['mode']}: "
        f"{row['tps']} tps, p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, "
        f"failed {row['failed']}, books {'pass' if row['books_ok'] else 'FAIL'}, "
        f"cores {row['driver']}/pg/other {cpu.get('tools', 0) + cpu.get('bench', 0):.2f}"
        f"/{cpu.get('postgres', 0):.2f}/{cpu.get('other', 0):.2f}",
        flush=True,
    )


def print_summary(ctx: Context) -> None:
    cells = [r for r in ctx.rows if r["kind"] == "transfers"]
    if cells:
        print("\nGraphQL transfers (tps = committed transfers/s; latency ms per request)")
        print(_HEADER)
        for row in cells:
            print(format_row(row))
    raws = [r for r in ctx.rows if r["kind"] == "raw_sql"]
    if raws:
        print("\nraw SQL reference")
        print(f"{'C':>3} {'mode':<7} | {'tps':>7} {'p50':>6} {'p95':>6} {'p99':>6} | books")
        for row in raws:
            lat = row["latency_ms"]
            print(
                f"{row['clients']:>3} {row['mode']:<7} | {_fmt(row['tps'], 7)}"
                f" {_fmt(lat['p50'], 6, 2)} {_fmt(lat['p95'], 6, 2)} {_fmt(lat['p99'], 6, 2)} |"
                f" {'pass' if row['books_ok'] else 'FAIL'}"
            )
    for row in ctx.rows:
        if row["kind"] != "deep_pages":
            continue
        print(f"\ndeep pages: {row['entries']} entries, median of {row['samples']} requests")
        for name in ("first_page", "deep_page", "last_page", "balance_latest", "balance_middle"):
            lat = row[f"{name}_ms"]
            print(f"  {name:<15} median {lat['median']:>7.2f} ms   p95 {lat['p95']:>7.2f} ms")
        print(
            f"  deep/first = {row['deep_over_first']}  (depth {row['depth']});"
            f" checks {row['checks']}"
        )


# -- main --------------------------------------------------------------------------------


def migrate(conninfo: str) -> None:
    """schema.sql of the bank_graphql in use, applied by its own migrate()."""
    # Imported here, not at the top: `--server-ref` must get to choose which bank_graphql.
    from bank_graphql.ledger import migrate as apply_schema

    apply_schema(conninfo)


def run(args: argparse.Namespace) -> int:
    run_id = secrets.token_hex(3)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    server_env = dict(item.split("=", 1) for item in args.server_env)
    ctx = Context(args, run_id, Databases(args.database_url, run_id), log_dir, server_env)
    workers_list: list[int | None] = [None] if args.target else list(args.workers)
    print(f"bench run {run_id}: results -> {args.results}", flush=True)
    try:
        if "raw" in args.phases:
            for clients in args.clients:
                for mode in args.modes:
                    _guarded(ctx, lambda c=clients, m=mode: raw_reference(ctx, c, m))
        if "graphql" in args.phases:
            print(_HEADER, flush=True)
            for workers in workers_list:
                for clients in args.clients:
                    for mode in args.modes:
                        for batch in args.batch:
                            row = _guarded(
                                ctx,
                                lambda w=workers, c=clients, m=mode, b=batch: graphql_cell(
                                    ctx, w, c, m, b
                                ),
                            )
                            if row is not None:
                                print(format_row(row), flush=True)
        if "deep" in args.phases:
            _guarded(ctx, lambda: deep_pages_phase(ctx))
    finally:
        ctx.databases.close()
        if ctx.errors == 0:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            print(f"server logs kept in {log_dir}", file=sys.stderr)
    print_summary(ctx)
    return 1 if ctx.errors else 0


def _guarded(ctx: Context, step: Any) -> dict[str, Any] | None:
    """Run one cell; an error in it is reported and the matrix goes on."""
    try:
        row: dict[str, Any] = step()
    except Exception as exc:  # psycopg, aiohttp, a server that would not start: go on
        ctx.errors += 1
        print(f"bench: cell failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc(limit=3)
        return None
    return row


def export_tree(ref: str) -> tuple[Path, str]:
    """The package and schema of commit `ref`, extracted to a new temporary folder."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, *EXPORTED_PATHS],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    tree = Path(tempfile.mkdtemp(prefix="bench-tree-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree, commit[:12]


def _reexec_on_exported_tree(ref: str, argv: Sequence[str]) -> None:
    """Start over in a fresh interpreter that imports bank_graphql from commit `ref`.

    `-P` keeps the working directory off sys.path, so PYTHONPATH decides: the exported tree
    first (bank_graphql), then the repository (bench). Servers inherit the same PYTHONPATH.
    """
    tree, commit = export_tree(ref)
    paths = [str(tree), str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        EXPORTED_TREE_ENV: str(tree),
        SERVER_COMMIT_ENV: commit,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }
    os.execve(sys.executable, [sys.executable, "-P", "-m", "bench.run", *argv], env)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    exported = os.environ.get(EXPORTED_TREE_ENV)
    if args.server_ref and not exported:
        _reexec_on_exported_tree(args.server_ref, argv)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _exit_on_signal)
    import bank_graphql

    print(f"bank_graphql from {Path(bank_graphql.__file__).parent} ({_git_commit()})")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            sys.exit(run(args))
        sys.exit(130)
    finally:
        if exported:
            shutil.rmtree(exported, ignore_errors=True)


if __name__ == "__main__":
    main()
