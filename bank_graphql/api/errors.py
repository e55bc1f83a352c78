"""GraphQL errors the API raises on purpose, each with an `extensions.code`."""

from enum import StrEnum

from graphql import GraphQLError


class ErrorCode(StrEnum):
    """Codes of request-level GraphQL errors (business refusals are `UserError`s instead)."""

    BAD_REQUEST = "BAD_REQUEST"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class ApiError(Exception):
    """An error safe to show the client as it is: message and code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def bad_input(message: str) -> ApiError:
    return ApiError(ErrorCode.BAD_USER_INPUT, message)


def error_code(error: GraphQLError) -> ErrorCode:
    """Classify an error of an execution result; INTERNAL_SERVER_ERROR means "mask it"."""
    original = error.original_error
    if isinstance(original, ApiError):
        return original.code
    if error.path is None:  # raised before execution: parsing, validation, variables
        if error.message.startswith("Syntax Error"):
            return ErrorCode.GRAPHQL_PARSE_FAILED
        if error.message.startswith("Variable "):
            return ErrorCode.BAD_USER_INPUT
        return ErrorCode.GRAPHQL_VALIDATION_FAILED
    return ErrorCode.INTERNAL_SERVER_ERROR
