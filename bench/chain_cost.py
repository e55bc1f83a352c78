"""What the hash chain costs PostgreSQL per transfer: the transfer function run in a loop
inside the database, with the chaining trigger on and off in turn, timed by the CPU its
backend used (less sensitive to a busy machine than the wall clock).

    .venv/bin/python -m bench.chain_cost [--rounds 10] [--transfers 2000]
"""

import argparse
import os
import statistics
import time
import uuid

import psycopg

from bench.context import migrate
from bench.infra import Databases

ACCOUNTS = 100
LOOP = """DO $$ DECLARE w bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN FOR i IN 1..%s LOOP
  PERFORM ledger_transfer('bench', 'a' || (i %% 100), 'a' || ((i * 7 + 1) %% 100), 1, NULL, w,
                          NULL, NULL, NULL, false);
END LOOP; END $$"""


def backend_cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_accounts(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    now = time.time_ns() // 1_000_000
    for i in range(ACCOUNTS):
        conn.execute(
            "INSERT INTO accounts (id, created_at, last_entry_at, survivor_id) "
            "VALUES (%s, 0, 0, %s)",
            (f"a{i}", f"a{i}"),
        )
        conn.execute(
            "SELECT ledger_deposit('bench', %s, 1000000000, NULL, %s, NULL, NULL)", (f"a{i}", now)
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--transfers", type=int, default=2000)
    args = p.parse_args()
    databases = Databases(args.server_url, uuid.uuid4().hex[:8])
    loop = (LOOP % args.transfers).encode()
    try:
        conninfo = databases.create("chain")
        migrate(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            open_accounts(conn)
            conn.execute("SET synchronous_commit = off")
            conn.execute(loop)  # warm, and a history for each account
            conn.execute("VACUUM ANALYZE")
            pid = conn.info.backend_pid
            per_transfer: dict[str, list[float]] = {"ENABLE": [], "DISABLE": []}
            for _ in range(args.rounds):
                for switch, samples in per_transfer.items():
                    conn.execute(f"ALTER TABLE entries {switch} TRIGGER entries_chain".encode())
                    before = backend_cpu_s(pid)
                    conn.execute(loop)
                    samples.append((backend_cpu_s(pid) - before) / args.transfers * 1e6)
            conn.execute("ALTER TABLE entries ENABLE TRIGGER entries_chain")
    finally:
        databases.close()
    on, off = (statistics.median(per_transfer[k]) for k in ("ENABLE", "DISABLE"))
    print(f"PostgreSQL CPU per transfer, median of {args.rounds} rounds of {args.transfers}:")
    print(f"  chain on {on:.0f} µs, off {off:.0f} µs: the chain costs {on - off:.0f} µs")


if __name__ == "__main__":
    main()
