"""`bank-graphql restore`: a backup read back into an empty database, all or nothing.

pg_restore writes the archive out as SQL and psql runs it inside one transaction that
commits only once all of it ran. On the way, the little that belongs to the server the
backup came from rather than to the ledger, and that the target server would refuse, is
left out: settings it does not know (a newer pg_restore sets PostgreSQL 17's
transaction_timeout, which older servers refuse) and column options it does not know (a
server may add its own)."""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from bank_graphql.ledger import (
    AFTER_RESTORE,
    accepted_column_options,
    setting_names,
    user_relations,
)
from bank_graphql.ops.database import add_database_options, database, one_line_errors, refuse
from bank_graphql.ops.pg_tools import ToolMissing, connection, error_line, tool, tool_env

_SETTING = re.compile(rb"SET (\w+) = .*;\r?\n")
_COLUMN_OPTIONS = re.compile(rb"(ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \()(.*)(\);\r?\n)")
_PIECE = 1 << 20


def add_restore_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    restore = commands.add_parser(
        "restore",
        help="restore a backup into an empty database (a new --data-dir, or a new database "
        "given with --database-url), all or nothing",
    )
    one_line_errors(restore)
    add_database_options(restore)
    restore.add_argument(
        "--from",
        dest="source",
        required=True,
        type=Path,
        metavar="FILE",
        help="a file written by `bank-graphql backup` (or pg_dump -Fc)",
    )
    restore.set_defaults(run=run_restore)


def run_restore(args: argparse.Namespace) -> None:
    source: Path = args.source
    try:
        _check_archive(source)
        with database(args, "restore", current=False) as url:
            _, held = user_relations(url)
            if held:
                refuse(
                    "restore",
                    f"the database is not empty ({held} tables, sequences or views); a "
                    "restored ledger must be the backup alone: restore into an empty one "
                    "(a new --data-dir, or a new database: createdb NAME, then --database-url)",
                )
            _restore(url, source, _Leaving(url, source))
    except ToolMissing as exc:
        refuse("restore", str(exc).strip().splitlines()[0])
    sys.stdout.write(f"restored {source}\n")


def _pg_restore(*args: str) -> "subprocess.CompletedProcess[bytes]":
    return subprocess.run(  # noqa: S603 - the wheel's pg_restore, no shell
        [tool("pg_restore"), *args],
        capture_output=True,
        env=tool_env(),
        check=False,
    )


def _check_archive(source: Path) -> None:
    """Refuse a file that cannot be read or is no archive, before any database is touched."""
    try:
        with source.open("rb") as archive:
            archive.read(1)
    except OSError as exc:
        refuse("restore", f"cannot read {source}: {exc.strerror}")
    listed = _pg_restore("--list", str(source))
    if listed.returncode != 0:
        reason = error_line(listed.stderr.decode(errors="replace"), "not a backup")
        refuse("restore", f"{source} is not a readable backup: {reason}")


class _Leaving:
    """Which lines of the schema part of the script the target server would refuse."""

    def __init__(self, url: str, source: Path) -> None:
        self._settings = setting_names(url)
        schema = _pg_restore("--section=pre-data", "--file=-", str(source)).stdout
        options = {
            name: value
            for line in schema.splitlines(keepends=True)
            if (found := _COLUMN_OPTIONS.fullmatch(line))
            for name, value in _options(found.group(2))
        }
        self._column_options = accepted_column_options(url, options.items())
        self._preamble = True

    def kept(self, line: bytes) -> bytes:
        """The line, or what of it the target server takes."""
        if line.startswith(b"-- Name: "):
            self._preamble = False  # the settings all come before the first object
        setting = _SETTING.fullmatch(line) if self._preamble else None
        if setting is not None:
            return line if setting.group(1).decode() in self._settings else b""
        found = _COLUMN_OPTIONS.fullmatch(line)
        if found is None:
            return line
        kept = [f"{n}={v}" for n, v in _options(found.group(2)) if n in self._column_options]
        if not kept:
            return b""
        return found.group(1) + ", ".join(kept).encode() + found.group(3)


def _options(listed: bytes) -> list[tuple[str, str]]:
    pairs = (option.partition("=") for option in listed.decode().split(", "))
    return [(name, value) for name, _, value in pairs]


def _restore(url: str, source: Path, leaving: _Leaving) -> None:
    dbname, env = connection(url)
    script_command = [tool("pg_restore"), "--no-owner", "--no-privileges", "--file=-"]
    psql_command = [tool("psql"), "--no-psqlrc", "--quiet", "--no-password"]
    psql_command += ["--set=ON_ERROR_STOP=1", dbname]
    with tempfile.TemporaryFile() as script_errors, tempfile.TemporaryFile() as psql_errors:
        with (
            subprocess.Popen(  # noqa: S603 - the wheel's pg_restore, no shell
                [*script_command, str(source)],
                stdout=subprocess.PIPE,
                stderr=script_errors,
                env=env,
            ) as script,
            subprocess.Popen(  # noqa: S603 - the wheel's psql, no shell
                psql_command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=psql_errors,
                env=env,
                bufsize=0,  # nothing left to flush into a psql that stopped reading
            ) as psql,
        ):
            assert script.stdout is not None
            assert psql.stdin is not None
            psql_stopped = not _feed(script.stdout, psql.stdin, leaving, script)
            if psql_stopped:
                script.kill()
        if psql_stopped or (script.returncode == 0 and psql.returncode != 0):
            refuse("restore", f"nothing restored: {_said(psql_errors, 'psql failed')}")
        if script.returncode != 0:
            refuse("restore", f"nothing restored: {_said(script_errors, 'pg_restore failed')}")


def _said(errors: IO[bytes], fallback: str) -> str:
    errors.seek(0)
    return error_line(errors.read().decode(errors="replace"), fallback)


def _feed(
    script: IO[bytes], psql: IO[bytes], leaving: _Leaving, restore: "subprocess.Popen[bytes]"
) -> bool:
    """Pass the script to psql inside BEGIN ... COMMIT, the COMMIT only once pg_restore has
    finished well; False if psql stopped reading (it failed)."""
    try:
        _write(psql, b"BEGIN;\n")
        for line in script:
            _write(psql, leaving.kept(line))
            if line.startswith(b"COPY "):
                break  # the data follows, as it is
        while piece := script.read(_PIECE):
            _write(psql, piece)
        if restore.wait() == 0:
            _write(psql, AFTER_RESTORE.encode() + b"COMMIT;\n")
        psql.close()
    except BrokenPipeError:
        return False
    return True


def _write(out: IO[bytes], data: bytes) -> None:
    """All of `data` into an unbuffered pipe (one write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]
