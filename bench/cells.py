"""One measurement each: a raw-SQL transfer cell, or a GraphQL cell of one write operation.

Each GraphQL cell gets a fresh database and its own `bank-graphql serve` process (or uses the
`--target` server); each raw-SQL cell a fresh database with the same schema.
"""

import contextlib
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any

from bench import auth, checks, load, operations, raw_sql, report
from bench.aio import run_async
from bench.context import Context, migrate, quiet_machine
from bench.cpu import CpuMeter
from bench.infra import Server, database_name, listening_pids


def per_op_us(cpu_s: float | None, operations_done: int) -> float | None:
    """CPU microseconds per committed operation."""
    if cpu_s is None or operations_done <= 0:
        return None
    return round(cpu_s / operations_done * 1e6, 1)


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
        quiet = quiet_machine(args)
        meter = CpuMeter(database=database_name(db))
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
        books = run_async(checks.check_books(db, args.accounts * args.deposit))
    finally:
        ctx.databases.drop(db)
    row = ctx.record(
        {
            "kind": "raw_sql",
            "operation": "transfer",
            "clients": clients,
            "mode": mode,
            "seconds": args.seconds,
            "accounts": args.accounts,
            **result.as_dict(),
            **books.as_dict(),
            "cpu_cores": cpu,
            "pg_cpu_us_per_op": per_op_us(meter.seconds["postgres_db"], result.transactions),
            **quiet,
        }
    )
    if not books.ok:
        ctx.errors += 1
    ctx.raw_cache[key] = row
    report.print_raw(row)
    return row


@dataclass(frozen=True, slots=True)
class Cell:
    workers: int | None  # None: the --target server
    clients: int
    mode: str
    operation: str
    batch: int

    @property
    def label(self) -> str:
        operation = self.operation.replace("-", "")
        return f"w{self.workers}_c{self.clients}_{self.mode}_{operation}_b{self.batch}"


@dataclass(frozen=True, slots=True)
class Target:
    base_url: str
    account_ids: tuple[str, ...]
    server_pids: list[int]
    database: str | None  # the cell's own database, audited and dropped afterwards
    database_name: str | None  # whose backends' CPU is measured


def _start_target(ctx: Context, cell: Cell, stack: contextlib.ExitStack) -> Target:
    """The cell's server and database, each stopped or dropped when `stack` closes."""
    args = ctx.args
    if args.target:
        base_url = args.target.rstrip("/")
        prefix = f"b{ctx.run_id}c{len(ctx.rows)}-"
        ids = tuple(f"{prefix}{i}" for i in range(1, args.accounts + 1))
        url = args.target_database_url
        pids = listening_pids(_port_of(base_url))
        auth.use(args.token)
        return Target(base_url, ids, pids, None, url and database_name(url))
    assert cell.workers is not None
    db = ctx.databases.create(f"gql_{cell.label}")
    stack.callback(ctx.databases.drop, db)
    server = Server(
        db,
        cell.workers,
        ctx.log_dir / f"server-{cell.label}.log",
        env=ctx.server_env,
        log_level=args.server_log_level,
        auth=args.auth == "on",
    )
    stack.callback(server.stop)
    base_url = server.start()
    ids = raw_sql.account_ids(args.accounts)
    return Target(base_url, ids, server.pids(), db, database_name(db))


def _port_of(base_url: str) -> int:
    parsed = urllib.parse.urlsplit(base_url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def _lacks_batches(base_url: str, batch: int) -> bool:
    """A batch cell on a server without transferBatch (None: introspection is refused)."""
    if batch == 1:
        return False
    return run_async(load.has_mutation(base_url, "transferBatch")) is False


def graphql_cell(ctx: Context, cell: Cell) -> dict[str, Any]:
    args = ctx.args
    base = {
        "kind": "graphql",
        "operation": cell.operation,
        "workers": cell.workers,
        "clients": cell.clients,
        "mode": cell.mode,
        "batch": cell.batch,
        "atomic": args.atomic if cell.batch > 1 else None,
        "by_id": args.by_id,
        "client": args.client,
        "seconds": args.seconds,
        "accounts": args.accounts,
        "target": args.target,
        "server_log_level": args.server_log_level,
        "server_env": ctx.server_env,
        "auth": args.auth,
    }
    with contextlib.ExitStack() as stack:
        target = _start_target(ctx, cell, stack)
        run_async(load.open_accounts(target.base_url, target.account_ids, args.deposit))
        if _lacks_batches(target.base_url, cell.batch):
            return ctx.record({**base, "status": "not available"})
        spec = load.LoadSpec(
            clients=cell.clients,
            seconds=args.seconds,
            mode=cell.mode,
            account_ids=target.account_ids,
            amount_max=args.amount_max,
            batch=cell.batch,
            atomic=args.atomic,
            by_id=args.by_id,
            seed=args.seed,
            operation=cell.operation,
            client=args.client,
        )
        quiet = quiet_machine(args)
        meter = CpuMeter(target.server_pids, database=target.database_name)
        meter.start()
        stats = run_async(load.run_load(target.base_url, spec))
        cpu = meter.stop()
        if cell.batch > 1 and load.field_missing(stats):
            return ctx.record({**base, "status": "not available"})
        books = _check_books(ctx, target, cell.operation, stats.committed_amount)
    summary = stats.summary()
    pg_cpu_s = meter.seconds["postgres_db"] if target.database_name else None
    measured = {
        "server_cpu_us_per_op": per_op_us(meter.seconds["server"], stats.committed),
        "pg_cpu_us_per_op": per_op_us(pg_cpu_s, stats.committed),
        "cpu_cores": cpu,
        **quiet,
    }
    return _record(ctx, base, summary, books, measured)


def _record(
    ctx: Context,
    base: dict[str, Any],
    summary: dict[str, Any],
    books: checks.BooksCheck,
    measured: dict[str, Any],
) -> dict[str, Any]:
    # Every operation the clients were told committed is in the ledger, and no other: exact
    # unless some requests failed (a timed-out request may still have committed).
    counted = books.operation_entries < 0 or books.operation_entries == summary["committed"]
    books_ok = books.ok and (counted or summary["failed"] > 0)
    raw = ctx.raw_cache.get((base["clients"], base["mode"]))
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
            **measured,
        }
    )
    if not books_ok:
        ctx.errors += 1
        print(
            f"  books do NOT balance: {books.as_dict()}, committed {summary['committed']}",
            file=sys.stderr,
        )
    return row


def _check_books(
    ctx: Context, target: Target, operation: str, committed_amount: int
) -> checks.BooksCheck:
    ids = target.account_ids
    expected = len(ids) * ctx.args.deposit + operations.money_in(operation, committed_amount)
    if target.database is not None:
        # Opening an account wrote one DEPOSIT entry: not one the load committed.
        before = len(ids) if operation == "deposit" else 0
        kind = operations.ENTRY_KIND[operation]
        return run_async(checks.check_books(target.database, expected, kind, before))
    # A target server: our accounts' money over GraphQL, the audit when we may reach its db.
    total = run_async(load.balances_over_graphql(target.base_url, ids))
    problems: list[str] = []
    if ctx.args.target_database_url:
        problems = run_async(checks.audit_only(ctx.args.target_database_url))
    return checks.BooksCheck(tuple(problems), total, expected, -1)
