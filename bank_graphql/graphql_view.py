"""The GraphQL endpoint: Strawberry's ASGI view, with errors that always carry a code."""

import json
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from bank_graphql.api.context import Context
from bank_graphql.api.errors import ErrorCode, error_code
from bank_graphql.http_errors import dump_json, error_response

# Errors whose own text is the server's business: the client gets these words instead.
_MASKED_MESSAGES = {
    ErrorCode.INTERNAL_SERVER_ERROR: "Internal server error",
    ErrorCode.DATABASE_UNAVAILABLE: "The database is unavailable; try again shortly "
    "(with the same idempotency key for a mutation).",
    ErrorCode.DATABASE_BUSY: "The database is busy; try again shortly "
    "(with the same idempotency key for a mutation).",
}


def format_error(error: GraphQLError) -> dict[str, Any]:
    code = error_code(error)
    formatted = error.formatted
    if code in _MASKED_MESSAGES:
        formatted["message"] = _MASKED_MESSAGES[code]
    formatted["extensions"] = {**formatted.get("extensions", {}), "code": code.value}
    return dict(formatted)


class GraphQLEndpoint(GraphQL[Context, None]):
    async def get_context(
        self,
        request: Request | WebSocket,
        response: Any,  # noqa: ARG002 - the base signature
    ) -> Context:
        return Context(ledger=request.app.state.ledger)

    async def process_result(
        self,
        request: Request,  # noqa: ARG002 - the base signature
        result: ExecutionResult,
    ) -> GraphQLHTTPResponse:
        response: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            response["errors"] = [format_error(e) for e in result.errors]
        return response

    def encode_json(self, data: object) -> bytes:
        return dump_json(data)

    def decode_json(self, data: str | bytes) -> object:
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError:
            # orjson stops at 64-bit integers; the stdlib reads any size, so an amount of
            # 2^64 reaches the Money scalar and gets its error instead of "bad JSON".
            try:
                decoded = json.loads(data)
            except (ValueError, RecursionError):  # bad JSON, not UTF-8, or nested too deep
                raise HTTPException(400, "Unable to parse request body as JSON") from None
        if not isinstance(decoded, (dict, list)):
            raise HTTPException(400, "the request body must be a JSON object")
        return decoded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as exc:
            response = _http_error(request, exc)
        await response(scope, receive, send)


def _http_error(request: Request, exc: HTTPException) -> Response:
    status_code, reason = exc.status_code, exc.reason
    if request.method == "GET" and "mutation" in reason.lower():
        # GraphQL over HTTP: an operation GET may not carry is "405 Method Not Allowed".
        status_code, reason = 405, "mutations must be sent with POST"
    code = {405: "METHOD_NOT_ALLOWED", 404: "NOT_FOUND"}.get(
        status_code, ErrorCode.BAD_REQUEST.value
    )
    return error_response(status_code, code, reason, method=request.method)
