"""The pinned files under /graphql/assets/<name>: only the names pinned (nothing else on the
disk can be asked for), with their content type, cached for good (each name holds a version)."""

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from bank_graphql.api.codes import ErrorCode
from bank_graphql.edge.http_errors import error_response
from bank_graphql.edge.playground import pins

_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    path = pins.STATIC / name
    if name not in pins.ASSETS or not path.is_file():
        return error_response(404, ErrorCode.NOT_FOUND, "Not Found", method=request.method)
    media_type = _CONTENT_TYPES[path.suffix]
    return FileResponse(path, media_type=media_type, headers=_HEADERS)


def playground_routes(enabled: bool) -> list[BaseRoute]:
    """The assets' route, when the GraphiQL page is served at all."""
    return [Route("/graphql/assets/{name}", asset, methods=["GET", "HEAD"])] if enabled else []
