"""The readable tables on stdout (the JSON lines hold everything)."""

from typing import Any

RATIO_NOTE = (
    "ratio = GraphQL tps / raw-SQL transfer tps at the same C and mode, for every operation"
    " (deposit and pay too: the raw reference is always the transfer transaction)"
)
HEADER = (
    f"{'W':>2} {'C':>3} {'mode':<7} {'operation':<14} {'K':>3} |"
    f" {'tps':>7} {'p50':>6} {'p95':>6} {'p99':>7} {'refused':>7} {'failed':>6} |"
    f" {'raw_tps':>7} {'ratio':>5} | {'srv_us':>6} {'pg_us':>6} | {'books':<5}"
    " | cores bench/server/pg/other"
)


def _fmt(value: Any, width: int, digits: int = 1) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, float):
        return f"{value:>{width}.{digits}f}"
    return f"{value!s:>{width}}"


def format_row(row: dict[str, Any]) -> str:
    lead = (
        f"{_fmt(row.get('workers'), 2)} {row['clients']:>3} {row['mode']:<7}"
        f" {row['operation']:<14} {row['batch']:>3} |"
    )
    if row.get("status") != "ok":
        return f"{lead} {row.get('status')}"
    lat = row["latency_ms"]
    cpu = row.get("cpu_cores") or {}
    return (
        f"{lead} {_fmt(row['tps'], 7)} {_fmt(lat['p50'], 6)} {_fmt(lat['p95'], 6)}"
        f" {_fmt(lat['p99'], 7)} {row['refused']:>7} {row['failed']:>6} |"
        f" {_fmt(row['raw_sql_tps'], 7)} {_fmt(row['ratio'], 5, 2)} |"
        f" {_fmt(row['server_cpu_us_per_op'], 6, 0)} {_fmt(row['pg_cpu_us_per_op'], 6, 0)} |"
        f" {'pass' if row['books_ok'] else 'FAIL':<5} |"
        f" {cpu.get('bench', 0):.2f}/{cpu.get('server', 0):.2f}/{cpu.get('postgres', 0):.2f}"
        f"/{cpu.get('other', 0):.2f}"
    )


def print_raw(row: dict[str, Any]) -> None:
    lat = row["latency_ms"]
    cpu = row["cpu_cores"]
    print(
        f"raw SQL ({row['driver']}) clients={row['clients']} {row['mode']}: "
        f"{row['tps']} tps, p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, "
        f"failed {row['failed']}, books {'pass' if row['books_ok'] else 'FAIL'}, "
        f"pg {_fmt(row['pg_cpu_us_per_op'], 0, 0)} us/transfer, "
        f"cores {row['driver']}/pg/other {cpu.get('tools', 0) + cpu.get('bench', 0):.2f}"
        f"/{cpu.get('postgres', 0):.2f}/{cpu.get('other', 0):.2f}",
        flush=True,
    )


def print_graphql_header() -> None:
    print(
        "GraphQL writes (tps = committed operations/s, items for batches; latency ms per"
        " request; srv_us/pg_us = server/PostgreSQL-backend CPU us per committed operation)"
    )
    print(RATIO_NOTE)
    print(HEADER, flush=True)


def _print_raw_table(raws: list[dict[str, Any]]) -> None:
    print("\nraw SQL reference (the transfer transaction)")
    print(
        f"{'C':>3} {'mode':<7} | {'tps':>7} {'p50':>6} {'p95':>6} {'p99':>6} | {'pg_us':>6} | books"
    )
    for row in raws:
        lat = row["latency_ms"]
        print(
            f"{row['clients']:>3} {row['mode']:<7} | {_fmt(row['tps'], 7)}"
            f" {_fmt(lat['p50'], 6, 2)} {_fmt(lat['p95'], 6, 2)} {_fmt(lat['p99'], 6, 2)} |"
            f" {_fmt(row['pg_cpu_us_per_op'], 6, 0)} | {'pass' if row['books_ok'] else 'FAIL'}"
        )


def _print_deep(row: dict[str, Any]) -> None:
    print(f"\ndeep pages: {row['entries']} entries, median of {row['samples']} requests")
    for name in ("first_page", "deep_page", "last_page", "balance_latest", "balance_middle"):
        lat = row[f"{name}_ms"]
        print(f"  {name:<15} median {lat['median']:>7.2f} ms   p95 {lat['p95']:>7.2f} ms")
    print(
        f"  deep/first = {row['deep_over_first']}  (depth {row['depth']}); checks {row['checks']}"
    )


def print_summary(rows: list[dict[str, Any]]) -> None:
    cells = [r for r in rows if r["kind"] == "graphql"]
    if cells:
        print()
        print_graphql_header()
        for row in cells:
            print(format_row(row))
    raws = [r for r in rows if r["kind"] == "raw_sql"]
    if raws:
        _print_raw_table(raws)
    for row in rows:
        if row["kind"] == "deep_pages":
            _print_deep(row)
