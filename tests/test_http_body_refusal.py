"""A body over the limit is answered 413 even to a client that sends the whole body before
it reads anything (Python's urllib, many SDKs): the server reads and drops the rest, up to
a bound, before it answers, so the client reads the answer instead of a reset."""

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.servers import Serve

MB = 1_000_000


def _post(url: str, body: bytes | Iterator[bytes], headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, ""
    except urllib.error.HTTPError as refused:
        code = json.loads(refused.read())["errors"][0]["extensions"]["code"]
        return refused.code, code


@pytest.mark.parametrize("size", [3 * MB, 12 * MB])
def test_an_oversized_body_sent_whole_gets_413_not_a_reset(
    database_url: str, serve: Serve, size: int
) -> None:
    server = serve("--database-url", database_url)
    body = b'{"query": "{ __typename }", "pad": "' + b"x" * size + b'"}'
    headers = {"content-type": "application/json"}
    assert _post(f"{server.base}/graphql", body, headers) == (413, "REQUEST_TOO_LARGE")

    def chunks() -> Iterator[bytes]:  # no length declared: found too large as it streams in
        yield b'{"query": "{ __typename }", "pad": "'
        for _ in range(size // 100_000):
            yield b"x" * 100_000
        yield b'"}'

    chunked = {**headers, "transfer-encoding": "chunked"}
    assert _post(f"{server.base}/graphql", chunks(), chunked) == (413, "REQUEST_TOO_LARGE")
