"""The frames of `graphql-transport-ws` the server checks and sends."""

from typing import Any, cast

from graphql import GraphQLError
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message
from strawberry.types import ExecutionResult

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Context
from bank_graphql.api.errors import ApiError, format_error
from bank_graphql.api.operation import misshapen_field

OPERATION_ID_CHARS_MAX = 128


def protocol_error(message: object) -> str | None:
    """Why `message` is not a frame of the protocol, or None when it is one."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "a message must be a JSON object with a type"
    kind = message["type"]
    if kind in {"connection_init", "ping", "pong"}:
        payload = message.get("payload")
        return None if payload is None or isinstance(payload, dict) else "invalid payload"
    if kind not in {"subscribe", "complete"}:
        return "unknown message type"
    operation_id = message.get("id")
    if not isinstance(operation_id, str) or not operation_id:
        return "an operation needs an id"
    if len(operation_id) > OPERATION_ID_CHARS_MAX:
        return f"an operation id has at most {OPERATION_ID_CHARS_MAX} characters"
    if kind == "complete":
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict) or not any(
        payload.get(key) is not None for key in ("query", "documentId", "extensions")
    ):
        return "subscribe needs a payload with a query"
    misshapen = misshapen_field(payload)
    return None if misshapen is None else f"invalid {misshapen[0]}"


def coded_error(code: ErrorCode, message: str) -> GraphQLError:
    return ApiError(code, message).as_graphql_error()


def error_message(operation_id: str, errors: list[GraphQLError] | None) -> Message:
    payload = [format_error(e) for e in errors or ()]
    return cast(Message, {"id": operation_id, "type": "error", "payload": payload})


def ends_live(context: Context, result: object) -> bool:
    """A subscription that failed (its source ended with an error) ends with `error`."""
    return context.live and isinstance(result, ExecutionResult) and result.data is None


def next_message(operation_id: str, result: ExecutionResult) -> Message:
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [format_error(e) for e in result.errors]
    return cast(Message, {"id": operation_id, "type": "next", "payload": payload})
