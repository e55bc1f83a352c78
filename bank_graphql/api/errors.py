"""GraphQL errors the API raises on purpose, each with an `extensions.code`, and the one
formatter every transport (HTTP, WebSocket) sends errors through."""

import re
from typing import Any

from graphql import GraphQLError
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from bank_graphql.api.codes import ErrorCode
from bank_graphql.ledger import DatabaseBusy, DatabaseUnavailable


class ApiError(Exception):
    """An error safe to show the client as it is: message and code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    def as_graphql_error(self) -> GraphQLError:
        """This error as a request's error (before any field ran), with its code."""
        return GraphQLError(str(self), original_error=self)


def bad_input(message: str) -> ApiError:
    return ApiError(ErrorCode.BAD_USER_INPUT, message)


# What graphql-core says of a variable's value (not of the document's use of variables).
_BAD_VARIABLE_VALUE = re.compile(
    r"Variable '\$[^']*' (has invalid value|got invalid value|of required type .* was not "
    r"provided|of non-null type .* must not be null)"
)

# The request names no operation it can run (HTTP refuses these before GraphQL runs).
_BAD_REQUESTS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


def error_code(error: GraphQLError) -> ErrorCode:
    """Classify an error of an execution result; INTERNAL_SERVER_ERROR means "mask it"."""
    original = error.original_error
    if isinstance(original, ApiError):
        return original.code
    if isinstance(original, _BAD_REQUESTS):
        return ErrorCode.BAD_REQUEST
    if isinstance(original, DatabaseUnavailable):
        return ErrorCode.DATABASE_UNAVAILABLE
    if isinstance(original, DatabaseBusy):
        return ErrorCode.DATABASE_BUSY
    code = (error.extensions or {}).get("code")
    if isinstance(code, str) and code in ErrorCode.__members__:
        return ErrorCode(code)
    if error.path is None:  # raised before execution: parsing, validation, variables
        if error.message.startswith("Syntax Error"):
            return ErrorCode.GRAPHQL_PARSE_FAILED
        if _BAD_VARIABLE_VALUE.match(error.message):
            return ErrorCode.BAD_USER_INPUT
        return ErrorCode.GRAPHQL_VALIDATION_FAILED
    return ErrorCode.INTERNAL_SERVER_ERROR


# Errors whose own text is the server's business: the client gets these words instead.
_MASKED_MESSAGES = {
    ErrorCode.INTERNAL_SERVER_ERROR: "Internal server error",
    ErrorCode.DATABASE_UNAVAILABLE: "The database is unavailable; try again shortly "
    "(with the same idempotency key for a mutation).",
    ErrorCode.DATABASE_BUSY: "The database is busy; try again shortly "
    "(with the same idempotency key for a mutation).",
}


# graphql-core echoes a bad value in its message, indented by its depth: a few hundred
# bytes of nested lists would make a message of tens of kilobytes.
MESSAGE_CHARS_MAX = 1000


def format_error(error: GraphQLError) -> dict[str, Any]:
    """The error as a client sees it, whatever the transport: a code always, and a generic
    message instead of the server's own text for anything unexpected."""
    code = error_code(error)
    formatted: dict[str, Any] = dict(error.formatted)
    if code in _MASKED_MESSAGES:
        formatted["message"] = _MASKED_MESSAGES[code]
        formatted["extensions"] = {"code": code.value}
    else:
        formatted["extensions"] = {**formatted.get("extensions", {}), "code": code.value}
        message = formatted["message"]
        if len(message) > MESSAGE_CHARS_MAX:
            formatted["message"] = message[: MESSAGE_CHARS_MAX - 1] + "…"
    return formatted
