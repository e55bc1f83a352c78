"""Requests refused before GraphQL runs: a GraphQL-shaped JSON error with a code, one
request log line and one error count, like every GraphQL operation gets. Also the JSON
codec both transports share."""

import json
import logging

import orjson
from starlette.responses import Response

from bank_graphql.api.codes import ErrorCode
from bank_graphql.edge import metrics
from bank_graphql.edge.media_types import JSON, content_type

request_log = logging.getLogger("bank_graphql.requests")


def dump_json(data: object) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError:
        # A lone surrogate a client sent (a valid JSON escape) echoed in a message: the
        # stdlib writes it back as the same escape.
        return json.dumps(data).encode()


def load_json(data: str | bytes) -> object:
    """Decode JSON text; ValueError when it is not JSON (or not UTF-8, or nested too deep)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson stops at 64-bit integers; the stdlib reads any size, so an amount of
        # 2^64 reaches the Money scalar and gets its error instead of "bad JSON".
        try:
            return json.loads(data)
        except RecursionError as exc:
            raise ValueError("JSON nested too deep") from exc


def record_refusal(code: ErrorCode, **fields: object) -> None:
    """Log and count a request (or a WebSocket frame) refused before GraphQL ran."""
    metrics.ERRORS.labels(code.value).inc()
    request_log.info("request refused", extra={**fields, "error_codes": [code.value]})


def record_disconnect(method: str) -> None:
    """The client left before its request was read: nothing to answer, nothing amiss."""
    metrics.REQUESTS.labels("unknown", "disconnected").inc()
    request_log.info("client disconnected", extra={"method": method, "outcome": "disconnected"})


def error_response(
    status_code: int,
    code: ErrorCode,
    message: str,
    *,
    method: str | None = None,
    media_type: str = JSON,
    allow: str = "POST",
) -> Response:
    """A refusal in `media_type` (`response_media_type` of the request, when it was read):
    `data` is null in JSON and absent in graphql-response+json, where GraphQL never ran.
    `allow`: the methods a 405 names."""
    record_refusal(code, method=method, status=status_code)
    body: dict[str, object] = {"errors": [{"message": message, "extensions": {"code": code.value}}]}
    if media_type == JSON:
        body = {"data": None, **body}
    headers = {"Allow": allow} if status_code == 405 else None
    return Response(
        dump_json(body),
        status_code=status_code,
        media_type=content_type(media_type),
        headers=headers,
    )
