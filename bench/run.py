"""`python -m bench.run`: the write matrix, its raw-SQL reference and the deep-page test.

Every database is dropped and every server stopped on the way out, whatever the way out is
(the end, an error, Ctrl-C or SIGTERM).
"""

import argparse
import contextlib
import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import operations, report
from bench.aio import STOP_SIGNALS, exit_on_signal
from bench.cells import Cell, graphql_cell, raw_reference
from bench.context import SERVER_COMMIT_ENV, Context, git_commit
from bench.deep_pages import deep_pages_phase
from bench.infra import REPO, Databases
from bench.options import build_parser

EXPORTED_TREE_ENV = "BENCH_EXPORTED_TREE"
# The whole package: its SQL (schema.sql, or numbered migrations) lives inside it.
EXPORTED_PATHS = ("bank_graphql", "pyproject.toml")


def graphql_cells(args: argparse.Namespace) -> list[Cell]:
    """The matrix; deposits and payments have no batch mutation, so they run at K = 1 only."""
    workers_list: list[int | None] = [None] if args.target else list(args.workers)
    return [
        Cell(workers, clients, mode, operation, batch)
        for workers in workers_list
        for clients in args.clients
        for mode in args.modes
        for operation in args.operations
        for batch in args.batch
        if operations.applies(operation, batch)
    ]


def run(args: argparse.Namespace) -> int:
    run_id = secrets.token_hex(3)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    server_env = dict(item.split("=", 1) for item in args.server_env)
    ctx = Context(args, run_id, Databases(args.database_url, run_id), log_dir, server_env)
    print(f"bench run {run_id}: results -> {args.results}", flush=True)
    try:
        if "raw" in args.phases:
            for clients in args.clients:
                for mode in args.modes:
                    _guarded(ctx, lambda c=clients, m=mode: raw_reference(ctx, c, m))
        if "graphql" in args.phases:
            report.print_graphql_header()
            for cell in graphql_cells(args):
                row = _guarded(ctx, lambda cell=cell: graphql_cell(ctx, cell))
                if row is not None:
                    print(report.format_row(row), flush=True)
        if "deep" in args.phases:
            _guarded(ctx, lambda: deep_pages_phase(ctx))
    finally:
        close_run(ctx, log_dir)
    report.print_summary(ctx.rows)
    return 1 if ctx.errors else 0


def close_run(ctx: Context, log_dir: Path) -> None:
    """Drop the run's databases; keep the servers' logs only when a cell failed."""
    ctx.databases.close()
    if ctx.errors == 0:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"server logs kept in {log_dir}", file=sys.stderr)


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
    """The package of commit `ref` (its SQL included), extracted to a new temporary folder."""
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


def reexec_on_exported_tree(ref: str, argv: Sequence[str], module: str = "bench.run") -> None:
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
    os.execve(sys.executable, [sys.executable, "-P", "-m", module, *argv], env)


def run_as_main(
    argv: Sequence[str] | None,
    parser: argparse.ArgumentParser,
    run_args: Callable[[argparse.Namespace], int],
    module: str,
) -> None:
    """Parse, re-execute on the exported tree of --server-ref when asked, run, and remove
    that tree afterwards; exit with the run's status (130 on Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    exported = os.environ.get(EXPORTED_TREE_ENV)
    if args.server_ref and not exported:
        reexec_on_exported_tree(args.server_ref, argv, module)
    for signum in STOP_SIGNALS:
        signal.signal(signum, exit_on_signal)
    import bank_graphql

    print(f"bank_graphql from {Path(bank_graphql.__file__).parent} ({git_commit()})")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            sys.exit(run_args(args))
        sys.exit(130)
    finally:
        if exported:
            shutil.rmtree(exported, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    run_as_main(argv, build_parser(), run, "bench.run")


if __name__ == "__main__":
    main()
