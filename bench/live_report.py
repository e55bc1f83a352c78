"""The readable table of `python -m bench.live` (the JSON lines hold everything)."""

from typing import Any

from bench.report import _fmt

NOTE = (
    "delivery = the event at the subscriber - the transfer's HTTP answer at the client"
    " (time.monotonic, same machine; ms). tps = committed transfers/s. pace: rN = open loop"
    " at N/s, cN = closed loop, N clients"
)
HEADER = (
    f"{'cell':<10} {'pace':>5} {'subs':>4} {'idle':>5} | {'tps':>6} {'late':>5} |"
    f" {'http50':>6} {'http99':>6} | {'dlv50':>6} {'dlv99':>6} {'dlvmax':>7} |"
    f" {'events':>8} {'missing':>7} {'dup':>4} {'ended':>5} {'resum':>5} |"
    f" {'srv_us':>6} {'pg_us':>6} {'srv@0':>5} | {'books':<5} | cores client/server/pg/other"
)


def format_row(row: dict[str, Any]) -> str:
    rate = row.get("target_rate")
    pace = f"r{int(rate)}" if rate else f"c{row.get('clients')}"
    http = row["latency_ms"]
    dlv = row["delivery_ms"]
    cpu = row.get("cpu_cores") or {}
    subs = row["ledger_subs"] + row["account_subs"]
    return (
        f"{row['cell']:<10} {pace:>5} {subs:>4} {row['idle_subs']:>5} |"
        f" {_fmt(row['tps'], 6)} {row['late_requests'] if rate else '-':>5} |"
        f" {_fmt(http['p50'], 6)} {_fmt(http['p99'], 6)} |"
        f" {_fmt(dlv['p50'], 6)} {_fmt(dlv['p99'], 6)} {_fmt(dlv['max'], 7)} |"
        f" {row['deliveries']:>8} {row['missing']:>7} {row['duplicates']:>4}"
        f" {row['ended_subs']:>5} {row['resumes']:>5} |"
        f" {_fmt(row['server_cpu_us_per_op'], 6, 0)} {_fmt(row['pg_cpu_us_per_op'], 6, 0)}"
        f" {_fmt(row.get('server_cores_no_writes'), 5, 2)} |"
        f" {'pass' if row['books_ok'] else 'FAIL':<5} |"
        f" {cpu.get('client', 0):.2f}/{cpu.get('server', 0):.2f}/{cpu.get('postgres', 0):.2f}"
        f"/{cpu.get('other', 0):.2f}"
    )


def print_header() -> None:
    print(NOTE)
    print(HEADER, flush=True)


def subscriber_cost(rows: list[dict[str, Any]]) -> str | None:
    """Closed-loop transfers/s without subscribers against with them, same run."""
    bare = [r for r in rows if r["cell"] == "throughput" and r["subs"] == 0]
    fed = [r for r in rows if r["cell"] == "throughput" and r["subs"] > 0]
    if not bare or not fed or not bare[0]["tps"]:
        return None
    before, after = bare[0]["tps"], fed[0]["tps"]
    return (
        f"cost of {fed[0]['subs']} subscribers to max transfers/s (closed loop,"
        f" {bare[0]['clients']} clients): {before:.0f} -> {after:.0f}"
        f" ({(after - before) / before * 100:+.1f} %)"
    )


def print_summary(rows: list[dict[str, Any]]) -> None:
    live = [r for r in rows if r["kind"] == "live"]
    if not live:
        return
    print()
    print_header()
    for row in live:
        print(format_row(row))
    cost = subscriber_cost(live)
    if cost:
        print(cost)
    for row in live:
        notes = (
            row["feed_errors"],
            row["unknown"],
            row["id_mismatch"],
            row["idle_events"],
            row["unsent_requests"],
            row["short_subs"],
        )
        if any(notes):
            print(
                f"  {row['cell']} {row['subs']}+{row['idle_subs']}: feed errors"
                f" {row['feed_errors']}, unknown events {row['unknown']}, id mismatches"
                f" {row['id_mismatch']}, events on idle accounts {row['idle_events']},"
                f" open-loop requests never sent (server behind) {row['unsent_requests']};"
                f" short: {row['short_subs']}"
            )
