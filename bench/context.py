"""What every cell of a run shares: its options, databases, results and error count."""

import argparse
import datetime
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cpu import wait_for_quiet
from bench.infra import REPO, Databases

SERVER_COMMIT_ENV = "BENCH_SERVER_COMMIT"


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
            "git": git_commit(),
            "cpus": os.cpu_count(),
            **row,
        }
        self.args.results.parent.mkdir(parents=True, exist_ok=True)
        with self.args.results.open("a") as out:
            out.write(json.dumps(row, sort_keys=False) + "\n")
        self.rows.append(row)
        return row


def git_commit() -> str | None:
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


def migrate(conninfo: str) -> None:
    """The schema of the bank_graphql in use, applied by its own migrate()."""
    # Imported here, not at the top: `--server-ref` must get to choose which bank_graphql.
    from bank_graphql.ledger import migrate as apply_schema

    apply_schema(conninfo)


def quiet_machine(args: argparse.Namespace) -> dict[str, float]:
    if args.quiet_cores <= 0:
        return {}
    return wait_for_quiet(args.quiet_cores, args.quiet_wait_s)
