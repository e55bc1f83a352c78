"""The GraphQL endpoint: Strawberry's ASGI view over HTTP and WebSocket, with errors that
always carry a code (formatted by `bank_graphql.api.errors.format_error` on both)."""

from datetime import timedelta
from typing import Any

from cross_web import HTTPException
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.ides import GraphQL_IDE
from strawberry.schema import BaseSchema
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Context
from bank_graphql.api.errors import format_error
from bank_graphql.edge.auth import (
    NOBODY,
    Authenticator,
    authorization_header,
    unauthenticated_response,
)
from bank_graphql.edge.graphql_ws import (
    CONNECTION_INIT_TIMEOUT_S,
    OPERATIONS_PER_CONNECTION_MAX,
    TransportWSHandler,
    WebSocketAdapter,
)
from bank_graphql.edge.http_errors import dump_json, error_response, load_json, record_disconnect
from bank_graphql.edge.media_types import (
    GRAPHQL_RESPONSE_JSON,
    JSON,
    content_type,
    response_media_type,
)
from bank_graphql.edge.playground import playground_page

PRINCIPAL_SCOPE_KEY = "bank_graphql.principal"
MEDIA_TYPE_SCOPE_KEY = "bank_graphql.media_type"
_HTTP_ERROR_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}
# The status of a request that never ran, answered in graphql-response+json, by its errors'
# codes (the highest wins); any other code is the client's mistake, 400.
_UNRUN_REQUEST_STATUS = {
    ErrorCode.FORBIDDEN.value: 403,
    ErrorCode.INTERNAL_SERVER_ERROR.value: 500,
    ErrorCode.DATABASE_UNAVAILABLE.value: 503,
    ErrorCode.DATABASE_BUSY.value: 503,
}


class GraphQLEndpoint(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = WebSocketAdapter

    def __init__(
        self,
        schema: BaseSchema,
        graphql_ide: GraphQL_IDE | None = "graphiql",
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            schema,
            graphql_ide=graphql_ide,
            # The legacy `graphql-ws` subprotocol is refused (4406): one protocol to secure.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=CONNECTION_INIT_TIMEOUT_S),
            max_subscriptions_per_connection=OPERATIONS_PER_CONNECTION_MAX,
            # Browser pages of these origins may open websockets, as CORS lets them post.
            allowed_origins=allowed_origins,
        )

    async def get_context(
        self,
        request: Request | WebSocket,
        response: Any,  # noqa: ARG002 - the base signature
    ) -> Context:
        # A websocket's principal is set when its connection_init is accepted.
        principal = request.scope.get(PRINCIPAL_SCOPE_KEY, NOBODY)
        return Context(ledger=request.app.state.ledger, principal=principal)

    async def render_graphql_ide(self, request: Request) -> Response:  # noqa: ARG002
        return playground_page()

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = _media_type(request)
        return sub_response

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            response["errors"] = [format_error(e) for e in result.errors]
            # A request error (it did not parse, validate or coerce its variables: no error
            # has a path) has no data entry in the GraphQL spec; JSON keeps `data: null`,
            # which its clients have always had.
            never_ran = result.data is None and all(e.path is None for e in result.errors)
            if never_ran and _media_type(request) == GRAPHQL_RESPONSE_JSON:
                del response["data"]
        return response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        if sub_response.media_type == GRAPHQL_RESPONSE_JSON:
            response.headers["content-type"] = content_type(GRAPHQL_RESPONSE_JSON)
            if isinstance(response_data, dict) and "data" not in response_data:
                response.status_code = _unrun_request_status(response_data)
        return response

    def encode_json(self, data: object) -> bytes:
        return dump_json(data)

    def decode_json(self, data: str | bytes) -> object:
        try:
            decoded = load_json(data)
        except ValueError:
            raise HTTPException(400, "Unable to parse request body as JSON") from None
        if not isinstance(decoded, (dict, list)):
            raise HTTPException(400, "the request body must be a JSON object")
        return decoded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        media_type = scope[MEDIA_TYPE_SCOPE_KEY] = response_media_type(request.headers)
        if not self._serves_ide(request):
            authenticator: Authenticator = request.app.state.authenticator
            principal = authenticator.principal(authorization_header(request.headers))
            if principal is None:
                refusal = unauthenticated_response(request.method, media_type)
                await refusal(scope, receive, send)
                return
            scope[PRINCIPAL_SCOPE_KEY] = principal
        try:
            if request.method == "POST":
                request = _json_body(request)
            response = await self.run(request)
        except HTTPException as exc:
            response = _http_error(request, exc)
        except ClientDisconnect:
            record_disconnect(request.method)
            return
        await response(scope, receive, send)

    def _serves_ide(self, request: Request) -> bool:
        """Would Strawberry answer with the GraphiQL page (a GET from a browser, no query)?
        The page holds no data: it is served without a credential."""
        return self.graphql_ide is not None and self.should_render_graphql_ide(
            self.request_adapter_class(request)
        )


def _media_type(request: HTTPConnection) -> str:
    """The media type `GraphQLEndpoint.__call__` chose for the answer to `request`."""
    media_type: str = request.scope.get(MEDIA_TYPE_SCOPE_KEY, JSON)
    return media_type


def _unrun_request_status(response_data: GraphQLHTTPResponse) -> int:
    statuses = [
        _UNRUN_REQUEST_STATUS.get(error.get("extensions", {}).get("code"), 400)
        for error in response_data.get("errors") or ()
        if isinstance(error, dict)
    ]
    return max(statuses, default=400)


def _json_body(request: Request) -> Request:
    """`request`, refused with 415 unless its body is JSON by its media type (any case, any
    parameters); passed on with that media type spelt as Strawberry expects it."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != JSON:
        raise HTTPException(415, "the request body must be application/json")
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
    headers.append((b"content-type", JSON.encode()))
    return Request({**request.scope, "headers": headers}, receive=request.receive)


def _http_error(request: Request, exc: HTTPException) -> Response:
    status_code, reason = exc.status_code, exc.reason
    if request.method == "GET" and "mutation" in reason.lower():
        # GraphQL over HTTP: an operation GET may not carry is "405 Method Not Allowed".
        status_code, reason = 405, "mutations must be sent with POST"
    code = _HTTP_ERROR_CODES.get(status_code, ErrorCode.BAD_REQUEST)
    return error_response(
        status_code, code, reason, method=request.method, media_type=_media_type(request)
    )
