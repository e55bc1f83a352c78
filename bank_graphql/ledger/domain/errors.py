"""Why the ledger could not answer at all: the database, not the request. Safe to retry
(with the same idempotency key for a mutation)."""


class LedgerError(Exception):
    pass


class DatabaseUnavailable(LedgerError):
    """The database is out of reach: connection lost, or no free connection in time."""


class DatabaseBusy(LedgerError):
    """The database is up but could not finish in time: a timeout, or a lost lock race."""
