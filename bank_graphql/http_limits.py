"""ASGI middleware refusing request bodies larger than a limit, before they are read."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bank_graphql.http_errors import error_response


class BodySizeLimit:
    """Answer 413 when a body exceeds `body_bytes_max`, by header or as it streams in."""

    def __init__(self, app: ASGIApp, body_bytes_max: int) -> None:
        self.app = app
        self.body_bytes_max = body_bytes_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_bytes_max:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.body_bytes_max:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "REQUEST_TOO_LARGE",
            f"request body larger than {self.body_bytes_max} bytes",
            method=scope["method"],
        )
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass
