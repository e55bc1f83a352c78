"""The raw-SQL reference: the transfer transaction sent straight to PostgreSQL.

The same work the ledger service does for one `transfer`, in the same number of round trips:

    BEGIN
    SELECT ... FROM accounts WHERE id IN (source, target) ORDER BY id FOR UPDATE
    one statement: INSERT both entries (balance_after from the locked balances) and
                   UPDATE both balances, the source's outgoing and last_entry_at
    COMMIT

It runs with pgbench (-M prepared), or with psycopg when pgbench is not installed. Its
throughput is the ceiling the GraphQL stack is measured against.
"""

import asyncio
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.load import latency_summary
from bench.operations import pick_pair

PGBENCH_GRACE_S = 60.0
TRANSACTIONS_PER_CLIENT_MAX = 1_000_000

_LOCK = (
    "SELECT id, balance, last_entry_at FROM accounts"
    " WHERE id IN ({src}, {dst}) ORDER BY id FOR UPDATE;"
)
# Everything after the lock in one statement, as the service's flush does. The CTEs read the
# rows this transaction has locked, so the balances they see are the current ones. A source
# short of funds inserts and updates nothing (the service would answer INSUFFICIENT_FUNDS).
_APPLY = """
WITH p AS (SELECT {src} AS src, {dst} AS dst, {amount} AS amount),
t AS (
    SELECT p.*,
           greatest((extract(epoch FROM clock_timestamp()) * 1000)::bigint,
                    s.last_entry_at, d.last_entry_at) AS ts,
           s.balance AS src_balance, d.balance AS dst_balance
    FROM p JOIN accounts s ON s.id = p.src JOIN accounts d ON d.id = p.dst
    WHERE s.balance >= p.amount
),
ins AS (
    INSERT INTO entries (account_id, ts, kind, amount, balance_after, counterparty_id{actor})
    SELECT src, ts, 'TRANSFER_OUT'::entry_kind, amount, src_balance - amount, dst{by} FROM t
    UNION ALL
    SELECT dst, ts, 'TRANSFER_IN'::entry_kind, amount, dst_balance + amount, src{by} FROM t
    RETURNING account_id, ts, kind, amount, balance_after
)
UPDATE accounts a
SET balance = ins.balance_after,
    outgoing = a.outgoing + CASE WHEN ins.kind = 'TRANSFER_OUT' THEN ins.amount ELSE 0 END,
    last_entry_at = ins.ts
FROM ins WHERE a.id = ins.account_id;
"""

_PGBENCH_CHOOSE = r"""\set amount random(1, :amount_max)
\if :hot = 1
\set other random(2, :naccounts)
\set side random(0, 1)
\if :side = 0
\set src 1
\set dst :other
\else
\set src :other
\set dst 1
\endif
\else
\set src random(1, :naccounts)
\set dst random(1, :naccounts - 1)
\if :dst >= :src
\set dst :dst + 1
\endif
\endif
"""

_PGBENCH_PARAMS = {
    "src": "('a' || :src::text)",
    "dst": "('a' || :dst::text)",
    "amount": ":amount::bigint",
}
_PSYCOPG_PARAMS = {"src": "%(src)s::text", "dst": "%(dst)s::text", "amount": "%(amount)s::bigint"}


def actor_columns(conninfo: str) -> dict[str, str]:
    """Entries name their actor since access control (as the server's own writes do); a
    schema from before has no such column."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'entries' AND column_name = 'actor'"
        ).fetchone()
    return {"actor": ", actor", "by": ", 'bench'"} if found else {"actor": "", "by": ""}


def pgbench_script(actor: dict[str, str]) -> str:
    lock = _LOCK.format(**_PGBENCH_PARAMS)
    # pgbench reads one SQL command per line unless it ends with ';': fold the statement.
    apply = " ".join(_APPLY.format(**_PGBENCH_PARAMS, **actor).split())
    return f"{_PGBENCH_CHOOSE}BEGIN;\n{lock}\n{apply}\nCOMMIT;\n"


def account_ids(count: int) -> tuple[str, ...]:
    """The ids both benches use: a1 .. aN, a1 being the hot account."""
    return tuple(f"a{i}" for i in range(1, count + 1))


def seed_accounts(conninfo: str, count: int, deposit: int) -> None:
    """Accounts a1..aN, each with one DEPOSIT entry: what the GraphQL setup creates."""
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.transaction():
        now_ms = time.time_ns() // 1_000_000 - 1000
        params = {"n": count, "deposit": deposit, "ts": now_ms}
        conn.execute(
            """INSERT INTO accounts (id, created_at, balance, last_entry_at, survivor_id)
               SELECT 'a' || i, %(ts)s, %(deposit)s, %(ts)s, 'a' || i
               FROM generate_series(1, %(n)s) AS i""",
            params,
        )
        actor = actor_columns(conninfo)
        conn.execute(
            f"""INSERT INTO entries (account_id, ts, kind, amount, balance_after{actor["actor"]})
               SELECT 'a' || i, %(ts)s, 'DEPOSIT', %(deposit)s, %(deposit)s{actor["by"]}
               FROM generate_series(1, %(n)s) AS i ORDER BY i""",
            params,
        )


@dataclass
class RawResult:
    driver: str
    tps: float
    transactions: int
    failed: int
    elapsed_s: float
    latency_ms: dict[str, float | None]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "driver": self.driver,
            "tps": self.tps,
            "transactions": self.transactions,
            "failed": self.failed,
            "elapsed_s": self.elapsed_s,
            "latency_ms": self.latency_ms,
            "notes": self.notes,
        }


def pgbench_path() -> str | None:
    return shutil.which("pgbench") or (
        "/usr/bin/pgbench" if Path("/usr/bin/pgbench").exists() else None
    )


def run_pgbench(
    conninfo: str, clients: int, seconds: float, mode: str, accounts: int, amount_max: int
) -> RawResult:
    pgbench = pgbench_path()
    assert pgbench is not None
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
        script = Path(tmp) / "transfer.sql"
        script.write_text(pgbench_script(actor_columns(conninfo)))
        command = [
            pgbench,
            "--no-vacuum",
            "--protocol=prepared",
            f"--client={clients}",
            # pgbench's own threads share the 2 cores with PostgreSQL: never more than 2.
            f"--jobs={min(clients, 2)}",
            f"--time={max(1, round(seconds))}",
            f"--file={script}",
            f"--define=naccounts={accounts}",
            f"--define=hot={1 if mode == 'hot' else 0}",
            f"--define=amount_max={amount_max}",
            "--log",
            f"--log-prefix={Path(tmp) / 'tx'}",
            conninfo,
        ]
        started = time.perf_counter()
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + PGBENCH_GRACE_S, check=False
        )
        elapsed = time.perf_counter() - started
        latencies: list[float] = []
        for log in Path(tmp).glob("tx.*"):
            for line in log.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    latencies.append(int(parts[2]) / 1e6)
    out = proc.stdout + proc.stderr
    tps = _float(r"tps = ([\d.]+) \(without initial connection time\)", out)
    processed = int(_float(r"number of transactions actually processed: (\d+)", out))
    failed = int(_float(r"number of failed transactions: (\d+)", out))
    notes = [line for line in out.splitlines() if "aborted" in line or "error" in line.lower()]
    if proc.returncode != 0:
        notes.insert(0, f"pgbench exited {proc.returncode}")
        failed += len([n for n in notes if "aborted" in n])
    return RawResult(
        "pgbench",
        round(tps, 1),
        processed,
        failed,
        round(elapsed, 3),
        latency_summary(latencies),
        notes[:10],
    )


def _float(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def run_psycopg(
    conninfo: str, clients: int, seconds: float, mode: str, ids: tuple[str, ...], amount_max: int
) -> RawResult:
    """The same transaction with psycopg: one connection per client, prepared statements."""
    lock = _LOCK.format(**_PSYCOPG_PARAMS).encode()
    apply = _APPLY.format(**_PSYCOPG_PARAMS, **actor_columns(conninfo)).encode()
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0}
    samples: list[str] = []

    async def client(n: int, deadline: float) -> None:
        rng = random.Random(7000 + n)
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            for _ in range(TRANSACTIONS_PER_CLIENT_MAX):
                if time.perf_counter() >= deadline:
                    return
                src, dst = pick_pair(rng, ids, mode)
                params = {"src": src, "dst": dst, "amount": rng.randint(1, amount_max)}
                started = time.perf_counter()
                try:
                    async with conn.transaction():
                        await conn.execute(lock, params, prepare=True)
                        await conn.execute(apply, params, prepare=True)
                except psycopg.Error as exc:
                    counts["failed"] += 1
                    if len(samples) < 5:
                        samples.append(str(exc)[:200])
                    continue
                latencies.append(time.perf_counter() - started)
                counts["ok"] += 1

    started = time.perf_counter()
    deadline = started + seconds
    async with asyncio.timeout(seconds + PGBENCH_GRACE_S):
        await asyncio.gather(*(client(n, deadline) for n in range(clients)))
    elapsed = time.perf_counter() - started
    return RawResult(
        "psycopg",
        round(counts["ok"] / elapsed, 1),
        counts["ok"],
        counts["failed"],
        round(elapsed, 3),
        latency_summary(latencies),
        samples,
    )
