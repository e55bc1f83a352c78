"""The one place where the driver's errors become the ledger's."""

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from psycopg import errors

from bank_graphql.ledger.domain.errors import DatabaseBusy, DatabaseUnavailable, LedgerError
from bank_graphql.ledger.storage.database import is_busy, is_unavailable

P = ParamSpec("P")
T = TypeVar("T")


def ledger_error(exc: BaseException) -> LedgerError | None:
    """The ledger's error for a driver's, or None for a driver error that is a defect."""
    if is_busy(exc):
        return DatabaseBusy(str(exc))
    if is_unavailable(exc):
        return DatabaseUnavailable(str(exc))
    return None


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """`fn`, raising the ledger's errors instead of the driver's."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except errors.Error as exc:  # PoolTimeout is one too
            error = ledger_error(exc)
            if error is None:
                raise
            raise error from exc

    return call
