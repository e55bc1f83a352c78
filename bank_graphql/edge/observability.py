"""One structured log line and a set of metrics per GraphQL operation.

Logged: the principal (`key:<id>`, `jwt:<subject>` or `anonymous`, never a token),
operation name and type, duration, outcome and error codes. Never variables, never
inputs: they may hold account ids and amounts.
"""

import logging
from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Histogram

from bank_graphql.api.errors import error_code
from bank_graphql.api.operation import OperationRecord
from bank_graphql.edge import metrics

log = logging.getLogger("bank_graphql.requests")


def _user_error_codes(data: object) -> list[str]:
    """Codes of the UserErrors in mutation payloads (top-level fields' `errors`)."""
    if not isinstance(data, dict):
        return []
    codes = []
    for payload in data.values():
        if isinstance(payload, dict):
            for error in payload.get("errors") or ():
                if isinstance(error, dict) and isinstance(error.get("code"), str):
                    codes.append(error["code"])
    return codes


def record_operation(record: OperationRecord) -> None:
    """The log line and metrics of one operation (api/operation.py's observer)."""
    _record(
        record.elapsed_s,
        record.principal,
        record.operation_type,
        record.operation_name,
        [error_code(e).value for e in record.errors],
        _user_error_codes(record.data),
    )


# Each metric's child per label values, found once: a few operation types, outcomes and
# codes, all declared by the server.
@lru_cache(maxsize=64)
def _requests(operation_type: str, outcome: str) -> Counter:
    return metrics.REQUESTS.labels(operation_type, outcome)


@lru_cache(maxsize=64)
def _latency(operation_type: str) -> Histogram:
    return metrics.LATENCY.labels(operation_type)


@lru_cache(maxsize=256)
def _errors(code: str) -> Counter:
    return metrics.ERRORS.labels(code)


def _record(
    elapsed_s: float,
    principal: str | None,
    operation_type: str,
    operation_name: str | None,
    graphql_codes: list[str],
    user_codes: list[str],
) -> None:
    outcome = "error" if graphql_codes else "refused" if user_codes else "ok"
    _requests(operation_type, outcome).inc()
    _latency(operation_type).observe(elapsed_s)
    for code in graphql_codes + user_codes:
        _errors(code).inc()
    if not log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "principal": principal,
        "operation_name": operation_name,
        "operation_type": operation_type,
        "duration_ms": round(elapsed_s * 1000, 3),
        "outcome": outcome,
    }
    if graphql_codes or user_codes:
        fields["error_codes"] = sorted(set(graphql_codes + user_codes))
    log.info("graphql operation", extra=fields)
