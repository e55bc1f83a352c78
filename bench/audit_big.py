"""How long `bank-graphql audit` takes on a big ledger, and how much memory it holds.

A fresh database gets N accounts with deposits between them (written straight through SQL,
so each entry's hash is chained by the database as the API's writes are), then
`bank-graphql audit --database-url` runs as its own process, timed, with its peak RSS.

    .venv/bin/python -m bench.audit_big --entries 1000000 --accounts 10000
"""

import argparse
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from bench.context import migrate
from bench.infra import Databases

BIN = Path(sys.executable).with_name("bank-graphql")


def seed(conninfo: str, entries: int, accounts: int) -> float:
    """`entries` deposits over `accounts` accounts, 1 ms apart per account; seconds taken."""
    per_account = entries // accounts
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.transaction():
        conn.execute(
            """INSERT INTO accounts (id, created_at, last_entry_at, survivor_id)
               SELECT 'a' || a, 0, 0, 'a' || a FROM generate_series(1, %(n)s) AS a""",
            {"n": accounts},
        )
        conn.execute(
            """INSERT INTO entries (account_id, ts, kind, amount, balance_after, actor)
               SELECT 'a' || a, i, 'DEPOSIT', 1 + i %% 100,
                      sum(1 + i %% 100) OVER (PARTITION BY a ORDER BY i), 'bench'
               FROM generate_series(1, %(n)s) AS a, generate_series(1, %(k)s) AS i
               ORDER BY a, i""",
            {"n": accounts, "k": per_account},
        )
        conn.execute(
            """UPDATE accounts a SET balance = last.balance_after, last_entry_at = last.ts
               FROM (SELECT DISTINCT ON (account_id) account_id, balance_after, ts
                     FROM entries ORDER BY account_id, ts DESC, id DESC) AS last
               WHERE a.id = last.account_id"""
        )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def timed_audit(conninfo: str) -> tuple[float, int, str]:
    """Seconds, peak RSS in KiB of the audit process, and its last line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN), "audit", "--database-url", conninfo],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        check=False,
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise SystemExit(f"audit failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr}")
    return elapsed, max(peak, before), done.stdout.splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--accounts", type=int, default=10_000)
    args = p.parse_args()
    databases = Databases(args.server_url, uuid.uuid4().hex[:8])
    try:
        conninfo = databases.create("audit")
        migrate(conninfo)
        seeded_s = seed(conninfo, args.entries, args.accounts)
        print(f"seeded {args.entries} entries over {args.accounts} accounts in {seeded_s:.1f} s")
        for run in (1, 2):
            elapsed, peak_kib, last = timed_audit(conninfo)
            print(f"audit run {run}: {elapsed:.1f} s, peak RSS {peak_kib / 1024:.0f} MiB: {last}")
    finally:
        databases.close()


if __name__ == "__main__":
    main()
