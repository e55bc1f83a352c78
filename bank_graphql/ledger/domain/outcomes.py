"""Outcome documents of the SQL write functions, turned into `WriteOutcome`s.

The SQL decides; this module only words its refusals: one table from outcome codes to
messages. A document stored under an idempotency key by an earlier version carries its
message already, and keeps it.
"""

from collections.abc import Callable
from typing import Any

from bank_graphql.ledger.domain.models import Account as AccountRow
from bank_graphql.ledger.domain.models import Entry, EntryKind, Payment, WriteOutcome
from bank_graphql.ledger.domain.refusals import Refusal, RefusalCode
from bank_graphql.ledger.domain.rules import MAX_MONEY


def _timestamp_message(args: dict[str, Any]) -> str:
    if args.get("reason") == "cashback_past_end":
        return (
            "the cashback of a payment at this timestamp would fall due past the end of "
            "representable time"
        )
    return f"timestamp {args['requested']} is later than the server's clock ({args['now']})"


def _overflow_message(args: dict[str, Any]) -> str:
    pending = " (pending cashback included)" if args.get("pending") else ""
    return f"account {args['account']!r} would hold more than {MAX_MONEY} minor units{pending}"


def _out_of_order_message(args: dict[str, Any]) -> str:
    # Without `newest` when an account the caller may not see set it.
    newest = "" if args.get("newest") is None else f" ({args['newest']})"
    return (
        f"timestamp {args['requested']} is earlier than the newest entry{newest} of an "
        "account this mutation touches"
    )


_MESSAGES: dict[RefusalCode, Callable[[dict[str, Any]], str]] = {
    RefusalCode.ACCOUNT_NOT_FOUND: lambda a: f"account {a['id']!r} does not exist",
    RefusalCode.ACCOUNT_ALREADY_EXISTS: lambda a: (
        f"account {a['id']!r} already exists (ids are never reused)"
    ),
    RefusalCode.INSUFFICIENT_FUNDS: lambda a: (
        f"amount {a['amount']} exceeds the balance of account {a['account']!r} ({a['balance']})"
    ),
    RefusalCode.BALANCE_OVERFLOW: _overflow_message,
    RefusalCode.INVALID_TIMESTAMP: _timestamp_message,
    RefusalCode.TIMESTAMP_OUT_OF_ORDER: _out_of_order_message,
    RefusalCode.IDEMPOTENCY_KEY_REUSED: lambda a: (
        f"idempotency key {a['key']!r} was already used for another request"
    ),
}


def worded(code: RefusalCode, field: str, **args: Any) -> Refusal:
    return Refusal(code, _MESSAGES[code](args), (field,))


def refusal_from_doc(doc: dict[str, Any]) -> Refusal:
    code = RefusalCode(doc["code"])
    message = doc.get("message")
    if message is None:
        message = _MESSAGES[code](doc.get("args") or {})
    field = doc.get("field")
    return Refusal(code, message, None if field is None else tuple(field))


def refusal_doc(refusal: Refusal) -> dict[str, Any]:
    return {"code": refusal.code.value, "message": refusal.message, "field": refusal.field}


def outcome_doc(refusals: tuple[Refusal, ...]) -> dict[str, Any]:
    """The document of an outcome decided before the database was asked (bad input)."""
    return {
        "refusals": [refusal_doc(r) for r in refusals],
        "balance": None,
        "entry": None,
        "payment": None,
        "accounts": [],
    }


def outcome_from_doc(doc: dict[str, Any]) -> WriteOutcome:
    entry, payment = doc["entry"], doc["payment"]
    return WriteOutcome(
        refusals=tuple(refusal_from_doc(r) for r in doc["refusals"]),
        balance=doc["balance"],
        entry=None if entry is None else Entry(**{**entry, "kind": EntryKind(entry["kind"])}),
        payment=None if payment is None else Payment(**payment),
        accounts=tuple(AccountRow(**a) for a in doc["accounts"]),
    )
