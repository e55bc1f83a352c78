"""GraphQL over HTTP: a GET or POST to /graphql, read, authenticated and run on the schema's
short path (api/operation.py), answered in the media type the client accepts.

Errors always carry a code (formatted by `bank_graphql.api.errors.format_error`). WebSocket
and the GraphiQL page are Strawberry's view's (edge/graphql_view.py).
"""

from typing import Any

from cross_web import HTTPException
from graphql import ExecutionResult
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.context import Context
from bank_graphql.api.errors import ApiError, format_error
from bank_graphql.api.operation import misshapen_field
from bank_graphql.api.schema import BankSchema
from bank_graphql.edge.auth import Authenticator, authorization_header, unauthenticated_response
from bank_graphql.edge.http_errors import dump_json, error_response, load_json
from bank_graphql.edge.media_types import GRAPHQL_RESPONSE_JSON, JSON, content_type

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
# What each method may carry (GraphQL over HTTP: no mutation by GET); subscriptions are
# refused as a GraphQL error (api/operation.py), with a code, on either.
_ALLOWED = {
    "GET": frozenset({OperationType.QUERY, OperationType.SUBSCRIPTION}),
    "POST": frozenset(OperationType),
}


async def graphql_over_http(
    request: Request, schema: BankSchema, media_type: str, *, page_asked: bool = False
) -> Response:
    """The answer to a GraphQL request over HTTP; `page_asked`: a browser asked for the
    GraphiQL page, which this server does not serve."""
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.principal(authorization_header(request.headers))
    if principal is None:
        return unauthenticated_response(request.method, media_type)
    try:
        if request.method not in _ALLOWED:
            raise HTTPException(405, "GraphQL only supports GET and POST requests.")
        if page_asked:
            raise HTTPException(404, "Not Found")
        data = await _request_data(request)
        context = Context(ledger=request.app.state.ledger, principal=principal)
        result = await _run(schema, data, context, request.method)
    except HTTPException as exc:
        return _http_error(request.method, exc, media_type)
    return _graphql_response(result, media_type)


async def _run(
    schema: BankSchema, data: dict[str, Any], context: Context, method: str
) -> ExecutionResult:
    try:
        query = schema.trusted.text(
            data.get("query"), data.get("documentId"), data.get("extensions")
        )
    except ApiError as refused:
        return ExecutionResult(None, [refused.as_graphql_error()])
    try:
        return await schema.runner.run(
            query,
            data.get("variables"),
            data.get("operationName"),
            context,
            _ALLOWED[method],
        )
    except CannotGetOperationTypeError as e:
        raise HTTPException(400, e.as_http_error_reason()) from e
    except InvalidOperationTypeError as e:
        raise HTTPException(400, e.as_http_error_reason(method)) from e
    except MissingQueryError as e:
        raise HTTPException(400, "No GraphQL query found in the request") from e


async def _request_data(request: Request) -> dict[str, Any]:
    """The request's `query`, `variables`, `operationName` and `extensions`, each checked."""
    if request.method == "GET":
        data: dict[str, Any] = dict(request.query_params)
        for name in ("variables", "extensions"):
            if data.get(name):
                data[name] = _decode_parameter(name, data[name])
    else:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != JSON:
            raise HTTPException(415, "the request body must be application/json")
        decoded = _decode_json(await _body(request))
        if isinstance(decoded, list):
            raise HTTPException(400, "Batching is not enabled")
        data = decoded
    misshapen = misshapen_field(data)
    if misshapen is not None:
        name, described = misshapen
        message = f"The GraphQL operation's `{name}` must be {described} or null, if provided."
        raise HTTPException(400, message)
    return data


def _decode_parameter(name: str, text: str) -> Any:
    """A JSON parameter of a GET: an object, or null as if it were absent."""
    try:
        decoded = load_json(text)
    except ValueError:
        raise HTTPException(400, f"Unable to parse the `{name}` parameter as JSON") from None
    return decoded


async def _body(request: Request) -> bytes:
    """The whole body (its size and time are bounded by the middleware in front)."""
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _decode_json(text: str | bytes) -> Any:
    try:
        decoded = load_json(text)
    except ValueError:
        raise HTTPException(400, "Unable to parse request body as JSON") from None
    if not isinstance(decoded, dict | list):
        raise HTTPException(400, "the request body must be a JSON object")
    return decoded


def _graphql_response(result: ExecutionResult, media_type: str) -> Response:
    body: dict[str, Any] = {"data": result.data}
    status = 200
    if result.errors:
        body["errors"] = [format_error(e) for e in result.errors]
        # A request error (it did not parse, validate or coerce its variables: no error
        # has a path) has no data entry in the GraphQL spec; JSON keeps `data: null`,
        # which its clients have always had.
        never_ran = result.data is None and all(e.path is None for e in result.errors)
        if never_ran and media_type == GRAPHQL_RESPONSE_JSON:
            del body["data"]
            status = _unrun_request_status(body["errors"])
    return Response(dump_json(body), status, media_type=content_type(media_type))


def _unrun_request_status(errors: list[dict[str, Any]]) -> int:
    statuses = [
        _UNRUN_REQUEST_STATUS.get(error.get("extensions", {}).get("code"), 400) for error in errors
    ]
    return max(statuses, default=400)


def _http_error(method: str, exc: HTTPException, media_type: str) -> Response:
    status_code, reason, allow = exc.status_code, exc.reason, "GET, POST"
    if method == "GET" and "mutation" in reason.lower():
        # GraphQL over HTTP: an operation GET may not carry is "405 Method Not Allowed".
        status_code, reason, allow = 405, "mutations must be sent with POST", "POST"
    code = _HTTP_ERROR_CODES.get(status_code, ErrorCode.BAD_REQUEST)
    return error_response(
        status_code, code, reason, method=method, media_type=media_type, allow=allow
    )
