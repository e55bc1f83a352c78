"""Keyset (seek) pagination: pages bounded by key values, never by offsets.

A page never skips or repeats a row while rows are appended, and a page 10,000 rows deep
costs one index descent like the first page does.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from psycopg.sql import SQL, Composable, Composed, Placeholder

from bank_graphql.ledger.domain.models import Page
from bank_graphql.ledger.storage.database import Conn

R = TypeVar("R")
Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Relay arguments with cursors already decoded into keys."""

    first: int | None = None
    last: int | None = None
    after: Key | None = None
    before: Key | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """The rows a connection may show at all, as exclusive bounds on the key."""

    above: Key
    below: Key


class Keyset(Generic[R]):
    """Pages of `SELECT <columns> FROM <source> WHERE <scope>` ordered by `key_columns`.

    Every SQL fragment is a constant of the code (composed with psycopg.sql); every value
    arrives as a parameter.
    """

    def __init__(
        self,
        columns: str,
        source: str,
        scope: str,
        key_columns: Sequence[str],
        key_types: Sequence[str],
        to_row: Callable[[tuple[Any, ...]], R],
    ) -> None:
        key = SQL("({})").format(SQL(", ").join(SQL(c) for c in key_columns))
        key_expr = key if len(key_columns) > 1 else SQL(key_columns[0])
        asc = SQL(", ").join(SQL(c) for c in key_columns)
        desc = SQL(", ").join(SQL("{} DESC").format(SQL(c)) for c in key_columns)

        def bound(name: str) -> Composable:
            parts = [
                SQL("{}::{}").format(Placeholder(f"{name}_{i}"), SQL(t))
                for i, t in enumerate(key_types)
            ]
            return SQL("({})").format(SQL(", ").join(parts)) if len(parts) > 1 else parts[0]

        base = SQL("SELECT {} FROM {} WHERE {}").format(SQL(columns), SQL(source), SQL(scope))
        window = SQL("{base} AND {key} {lo_op} {lo} AND {key} {hi_op} {hi}")

        def query(lo_op: str, hi_op: str) -> Composed:
            return window.format(
                base=base,
                key=key_expr,
                lo_op=SQL(lo_op),
                lo=bound("lo"),
                hi_op=SQL(hi_op),
                hi=bound("hi"),
            )

        limit = Placeholder("limit")
        self._forward = SQL("{} ORDER BY {} LIMIT {}").format(query(">", "<"), asc, limit)
        self._backward = SQL("{} ORDER BY {} LIMIT {}").format(query(">", "<"), desc, limit)
        # Is there a row in the window at or before / at or after a cursor?
        self._any_through = SQL("SELECT EXISTS ({})").format(query(">", "<="))
        self._any_from = SQL("SELECT EXISTS ({})").format(query(">=", "<"))
        self._to_row = to_row

    async def page(
        self, conn: Conn, scope: dict[str, Any], window: Window, request: PageRequest
    ) -> Page[R]:
        lo = window.above if request.after is None else max(window.above, request.after)
        hi = window.below if request.before is None else min(window.below, request.before)
        if request.first is None and request.last is not None:
            rows = await self._fetch(conn, self._backward, scope, lo, hi, request.last + 1)
            has_previous = len(rows) > request.last
            rows = rows[: request.last][::-1]
            has_next = request.before is not None and await self._exists(
                conn, self._any_from, scope, request.before, window.below
            )
            return Page(rows, has_previous, has_next)

        first = 50 if request.first is None else request.first
        rows = await self._fetch(conn, self._forward, scope, lo, hi, first + 1)
        has_next = len(rows) > first
        rows = rows[:first]
        has_previous = request.after is not None and await self._exists(
            conn, self._any_through, scope, window.above, request.after
        )
        if request.last is not None and len(rows) > request.last:
            rows = rows[len(rows) - request.last :]
            has_previous = True
        return Page(rows, has_previous, has_next)

    async def _fetch(
        self, conn: Conn, sql: Composed, scope: dict[str, Any], lo: Key, hi: Key, limit: int
    ) -> list[R]:
        cursor = await conn.execute(sql, {**scope, **_bounds(lo, hi), "limit": limit})
        return [self._to_row(row) for row in await cursor.fetchall()]

    async def _exists(
        self, conn: Conn, sql: Composed, scope: dict[str, Any], lo: Key, hi: Key
    ) -> bool:
        cursor = await conn.execute(sql, {**scope, **_bounds(lo, hi)})
        row = await cursor.fetchone()
        return bool(row and row[0])


def _bounds(lo: Key, hi: Key) -> dict[str, Any]:
    params = {f"lo_{i}": v for i, v in enumerate(lo)}
    params.update({f"hi_{i}": v for i, v in enumerate(hi)})
    return params
