"""Requests refused before GraphQL runs: a GraphQL-shaped JSON error with a code, one
request log line and one error count, like every GraphQL operation gets."""

import json
import logging

import orjson
from starlette.responses import Response

from bank_graphql import metrics

request_log = logging.getLogger("bank_graphql.requests")


def dump_json(data: object) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError:
        # A lone surrogate a client sent (a valid JSON escape) echoed in a message: the
        # stdlib writes it back as the same escape.
        return json.dumps(data).encode()


def error_response(
    status_code: int, code: str, message: str, *, method: str | None = None
) -> Response:
    metrics.ERRORS.labels(code).inc()
    request_log.info(
        "request refused", extra={"method": method, "status": status_code, "error_codes": [code]}
    )
    body = {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}
    headers = {"Allow": "POST"} if status_code == 405 else None
    return Response(
        dump_json(body), status_code=status_code, media_type="application/json", headers=headers
    )
