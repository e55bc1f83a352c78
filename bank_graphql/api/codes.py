"""Every code the server sends, declared once: `ErrorCode` for errors of a request
(`extensions.code` of a GraphQL error, whether GraphQL ran or the HTTP or WebSocket edge
refused the request first), and `UserErrorCode` for a mutation's `UserError.code`."""

from enum import StrEnum

import strawberry

from bank_graphql.ledger import RefusalCode


class ErrorCode(StrEnum):
    """Codes of request-level errors (business refusals are `UserError`s instead)."""

    # GraphQL requests
    BAD_REQUEST = "BAD_REQUEST"
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
    TOO_MANY_OPERATIONS = "TOO_MANY_OPERATIONS"
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    DOCUMENT_NOT_TRUSTED = "DOCUMENT_NOT_TRUSTED"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    DATABASE_BUSY = "DATABASE_BUSY"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    # HTTP requests refused before GraphQL runs
    UNAUTHENTICATED = "UNAUTHENTICATED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    URL_TOO_LONG = "URL_TOO_LONG"
    HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    # Subscriptions end with these
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    # WebSocket close codes of `graphql-transport-ws`
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    SUBPROTOCOL_NOT_ACCEPTABLE = "SUBPROTOCOL_NOT_ACCEPTABLE"
    CONNECTION_INIT_TIMEOUT = "CONNECTION_INIT_TIMEOUT"
    OPERATION_ID_IN_USE = "OPERATION_ID_IN_USE"
    TOO_MANY_INITIALISATION_REQUESTS = "TOO_MANY_INITIALISATION_REQUESTS"


# The ledger's refusal codes as they are, under the GraphQL name clients already know.
UserErrorCode = strawberry.enum(RefusalCode, name="ErrorCode")
