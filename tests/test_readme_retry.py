"""The README's Python retry example, run as written against a real server: it sends a
request again only while the database could not take it, and shows at once a refusal that
no retry can change."""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import Serve, Server

README = Path(__file__).resolve().parent.parent / "README.md"


def _example(server: Server) -> Callable[[str, str, int], dict[str, Any]]:
    text = README.read_text()
    section = text[text.index("A script that retries safely") :]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)[:1]
    code = code.replace("http://127.0.0.1:8000", server.base).replace(
        '"bgk_..."', repr(server.admin_key)
    )
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    transfer: Callable[[str, str, int], dict[str, Any]] = namespace["transfer"]
    return transfer


@pytest.fixture
def counted_posts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    posts: list[int] = []
    real_post = httpx.post

    def post(*args: Any, **kwargs: Any) -> httpx.Response:
        posts.append(1)
        return real_post(*args, **kwargs)

    monkeypatch.setattr(httpx, "post", post)
    return posts


def test_the_retry_example_stops_at_a_refusal_and_shows_it(
    serve: Serve, database_url: str, counted_posts: list[int]
) -> None:
    server = serve("--database-url", database_url, auth=True)
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    for account, amount in (("alice", 500), ("bob", 0)):
        query = (
            "mutation($id: ID!, $n: Money!) { createAccount(input: {id: $id}) { errors { code } }"
            " deposit(input: {accountId: $id, amount: $n}) { errors { code } } }"
        )
        body = httpx.post(
            f"{server.base}/graphql",
            json={"query": query, "variables": {"id": account, "n": max(amount, 1)}},
            headers=auth,
        ).json()
        assert "errors" not in body, body
    transfer = _example(server)
    counted_posts.clear()

    with pytest.raises(ValueError, match="BAD_USER_INPUT"):
        transfer("alice", "bob", -5)  # a bad amount: refused, never retried
    assert len(counted_posts) == 1

    counted_posts.clear()
    done = transfer("alice", "bob", 120)
    assert done["errors"] == []
    assert done["balance"] == 500 - 120
    assert len(counted_posts) == 1

    counted_posts.clear()
    refused = transfer("alice", "bob", 10**6)  # a business refusal is a payload: final
    assert [e["code"] for e in refused["errors"]] == ["INSUFFICIENT_FUNDS"]
    assert len(counted_posts) == 1
