"""`bank-graphql backup`: the whole database in PostgreSQL's custom archive format (pg_dump
-Fc), taken from one consistent snapshot while the server runs (`bank-graphql restore`
reads it back)."""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bank_graphql.ledger import user_relations
from bank_graphql.ops.database import add_database_options, database, one_line_errors, refuse
from bank_graphql.ops.pg_tools import ToolMissing, connection, error_line, tool
from bank_graphql.ops.progress import progress


def add_backup_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    backup = commands.add_parser(
        "backup",
        help="copy the whole database to FILE with pg_dump (custom format), while it serves",
    )
    one_line_errors(backup)
    add_database_options(backup)
    backup.add_argument(
        "--to",
        dest="target",
        required=True,
        type=Path,
        metavar="FILE",
        help="the backup, readable by its owner only; it appears once complete",
    )
    backup.set_defaults(run=run_backup)


def run_backup(args: argparse.Namespace) -> None:
    target: Path = args.target
    if not args.database_url and not (args.data_dir / "PG_VERSION").exists():
        # Else a new, empty one would be made, and backed up as if it were the ledger.
        refuse(
            "backup", f"no embedded database in {args.data_dir}: give --data-dir or --database-url"
        )
    try:
        with database(args, "backup", current=False) as url:
            tables, _ = user_relations(url)
            _dump(url, target, tables)
    except ToolMissing as exc:
        refuse("backup", str(exc).strip().splitlines()[0])
    sys.stdout.write(f"backup written to {target} ({tables} tables)\n")


def _dump(url: str, target: Path, tables: int) -> None:
    """pg_dump into a file beside `target`, renamed to it once complete; progress by table."""
    dbname, env = connection(url)
    folder = target.resolve().parent
    try:
        handle, partial_name = tempfile.mkstemp(
            dir=folder, prefix=f".{target.name}.", suffix=".part"
        )
    except OSError as exc:
        refuse("backup", f"cannot write in {folder}: {exc.strerror}")
    os.close(handle)
    command = [tool("pg_dump"), "--format=custom", "--verbose", "--no-password"]
    command += [f"--file={partial_name}", dbname]
    said = []
    try:
        with (
            progress(tables, "tables") as bar,
            subprocess.Popen(  # noqa: S603 - the wheel's pg_dump, no shell
                command, stderr=subprocess.PIPE, env=env, text=True
            ) as dump,
        ):
            assert dump.stderr is not None
            for line in dump.stderr:
                if "dumping contents of table" in line:
                    bar.update(1)
                elif ": error:" in line or ": detail:" in line:
                    said.append(line)
        if dump.returncode != 0:
            refuse("backup", error_line("".join(said), "pg_dump failed"))
        os.replace(partial_name, target)
    finally:
        Path(partial_name).unlink(missing_ok=True)
