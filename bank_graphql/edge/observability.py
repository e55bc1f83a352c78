"""One structured log line and a set of metrics per GraphQL operation.

Logged: the principal (`key:<id>`, `jwt:<subject>` or `anonymous`, never a token),
operation name and type, duration, outcome and error codes. Never variables, never
inputs: they may hold account ids and amounts.
"""

import logging
import time
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from bank_graphql.api.errors import error_code
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


def _principal_name(context: object) -> str | None:
    principal = getattr(context, "principal", None)
    name = getattr(principal, "name", None)
    return name if isinstance(name, str) else None


class RequestLog(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        principal = _principal_name(self.execution_context.context)
        try:
            yield
        except GraphQLError as error:  # the document did not parse (syntax, too many tokens)
            _record(started, principal, "unknown", None, [error_code(error).value], [])
            raise
        # Any other exception (an operation type the HTTP method may not carry) is refused
        # and logged by the HTTP layer.
        context = self.execution_context
        result = context.result
        errors = (result.errors if result else None) or context.pre_execution_errors or []
        try:
            operation_type = context.operation_type.value
        except RuntimeError:  # no operation to speak of
            operation_type = "unknown"
        _record(
            started,
            principal,
            operation_type,
            context.operation_name,
            [error_code(e).value for e in errors],
            _user_error_codes(result.data if result else None),
        )


def _record(
    started: float,
    principal: str | None,
    operation_type: str,
    operation_name: str | None,
    graphql_codes: list[str],
    user_codes: list[str],
) -> None:
    elapsed_s = time.perf_counter() - started
    outcome = "error" if graphql_codes else "refused" if user_codes else "ok"
    metrics.REQUESTS.labels(operation_type, outcome).inc()
    metrics.LATENCY.labels(operation_type).observe(elapsed_s)
    for code in graphql_codes + user_codes:
        metrics.ERRORS.labels(code).inc()
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
