"""Who may do what: roles, the operations each may run, and the accounts a credential sees.

The one table of permissions (README "Access"). Authentication (API keys, JWTs) only
produces a `Principal`; every decision about what it may do is made here.
"""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from bank_graphql.ledger.domain.models import Entry
from bank_graphql.ledger.domain.rules import is_account_id

SYSTEM_ACTOR = "system"
"""The actor of entries the ledger writes itself (cashback); no credential can be it."""
ANONYMOUS_PRINCIPAL = "anonymous"
PRINCIPAL_CHARS_MAX = 256
"""Every request's principal when access control is off."""


class Role(StrEnum):
    ADMIN = "ADMIN"
    OPERATOR = "OPERATOR"
    CUSTOMER = "CUSTOMER"
    READER = "READER"


class Operation(StrEnum):
    READ = "read"
    """Every query and subscription."""
    CREATE_ACCOUNT = "createAccount"
    DEPOSIT = "deposit"
    TRANSFER = "transfer"
    """`transfer`, `pay` and `transferBatch`: money out of the credential's own accounts."""
    MERGE = "mergeAccounts"
    METRICS = "metrics"


_MAY: dict[Role, frozenset[Operation]] = {
    Role.ADMIN: frozenset(Operation),
    Role.OPERATOR: frozenset(
        {Operation.READ, Operation.CREATE_ACCOUNT, Operation.DEPOSIT, Operation.TRANSFER}
    ),
    Role.CUSTOMER: frozenset({Operation.READ, Operation.TRANSFER}),
    Role.READER: frozenset({Operation.READ, Operation.METRICS}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The credential behind a request: who (as entries record it), its role, and the
    accounts it is limited to (None: not limited)."""

    name: str
    role: Role
    accounts: frozenset[str] | None = None

    def may(self, operation: Operation) -> bool:
        if operation is Operation.CREATE_ACCOUNT and self.accounts is not None:
            return False  # a scoped credential cannot widen its own world
        return operation in _MAY[self.role]

    def shown_actor(self, actor: str | None) -> str | None:
        """The actor of an entry as this credential may see it: a credential limited to
        accounts sees itself and `system`; who acted for anyone else is not its business
        (null, as on entries from before access control)."""
        if self.accounts is None or actor in (self.name, SYSTEM_ACTOR):
            return actor
        return None

    def shown(self, entry: Entry) -> Entry:
        """The entry as this credential may see it (see `shown_actor`)."""
        actor = self.shown_actor(entry.actor)
        return entry if actor == entry.actor else replace(entry, actor=actor)

    def sees(self, account_id: str) -> bool:
        """Does the account exist for this credential? Outside its scope it never does."""
        return self.accounts is None or account_id in self.accounts

    @property
    def scope(self) -> list[str] | None:
        """The scope as a sorted list, for queries (None: every account)."""
        return None if self.accounts is None else sorted(self.accounts)


def credential_problem(role: Role, accounts: Iterable[str] | None) -> str | None:
    """Why a credential of `role` limited to `accounts` cannot be issued, or None."""
    if role is Role.CUSTOMER and accounts is None:
        return "a CUSTOMER credential must be limited to accounts"
    if accounts is None:
        return None
    scope = list(accounts)
    if not scope:
        return "a credential limited to accounts needs at least one account"
    if not all(is_account_id(a) for a in scope):
        return "an account of the scope is not a valid account id"
    return None


def principal_problem(name: str) -> str | None:
    """Why `name` cannot be a principal (it is recorded on entries and shown), or None."""
    if not 0 < len(name) <= PRINCIPAL_CHARS_MAX:
        return f"a principal has 1 to {PRINCIPAL_CHARS_MAX} characters"
    if not name.isprintable() or not _utf8(name):
        return "a principal is printable text"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def scoped(name: str, role: Role, accounts: Iterable[str] | None) -> Principal:
    return Principal(name, role, None if accounts is None else frozenset(accounts))


ANONYMOUS = Principal(ANONYMOUS_PRINCIPAL, Role.ADMIN)
