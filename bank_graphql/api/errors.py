"""GraphQL errors the API raises on purpose, each with an `extensions.code`."""

import re
from enum import StrEnum

from graphql import GraphQLError

from bank_graphql.ledger import is_busy, is_unavailable


class ErrorCode(StrEnum):
    """Codes of request-level GraphQL errors (business refusals are `UserError`s instead)."""

    BAD_REQUEST = "BAD_REQUEST"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    DATABASE_BUSY = "DATABASE_BUSY"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class ApiError(Exception):
    """An error safe to show the client as it is: message and code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def bad_input(message: str) -> ApiError:
    return ApiError(ErrorCode.BAD_USER_INPUT, message)


# What graphql-core says of a variable's value (not of the document's use of variables).
_BAD_VARIABLE_VALUE = re.compile(
    r"Variable '\$[^']*' (has invalid value|got invalid value|of required type .* was not "
    r"provided|of non-null type .* must not be null)"
)


def error_code(error: GraphQLError) -> ErrorCode:
    """Classify an error of an execution result; INTERNAL_SERVER_ERROR means "mask it"."""
    original = error.original_error
    if isinstance(original, ApiError):
        return original.code
    if original is not None and is_unavailable(original):
        return ErrorCode.DATABASE_UNAVAILABLE
    if original is not None and is_busy(original):
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
