"""Documents and values built to be expensive or to break the server: fragment bombs, batch
results, malformed cursors and over-long integers. Each is refused with a coded error before
anything runs (or answered as a valid document), never with Python's own text."""

import base64
import json

import pytest

from tests.conftest import GraphQLClient
from tests.operations import funded, pay, transfer

# --- cursors that are not positions -------------------------------------------------------


def _b64(raw: str | bytes) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


BAD_CURSORS = [
    "YToA",  # "a:" and a NUL byte
    _b64("a:\x00"),
    _b64("a:acct\x00x"),
    _b64("a:"),
    _b64("a:" + "x" * 65),
    _b64("a:not an id"),
    _b64("a:é"),
    _b64("e:\x00:1"),
    _b64("e:1:\x00"),
    _b64("p:\x00"),
    _b64("p:"),
    _b64("p:-1"),
    _b64("p:0"),
    _b64("p:+1"),
    _b64("p: 1"),
    _b64("p:1 "),
    _b64("p:\u0661"),  # an Arabic-Indic digit: int() reads it, a cursor does not hold it
    _b64(f"p:{2**63}"),
    _b64("p:" + "9" * 5000),
    _b64("e:-1:1"),
    _b64("e:1:-1"),
    _b64(f"e:{2**53}:1"),
    _b64(f"e:1:{2**63}"),
    _b64("e:1:1:1"),
    _b64("e:1"),
    _b64("x:1:1"),
    _b64(b"a:\xff\xfe"),
    _b64(b"\xff\xfe\x00"),
    "",
    "=",
    "====",
    "!!!!",
    "YToA!",
    "Y ToA",
    "é",
    "\ud800",
    "a" * 5,
    "A" * 100_000,
]


@pytest.mark.parametrize(
    ("connection", "argument"),
    [
        ("accounts", "after"),
        ("transactions", "after"),
        ("transactions", "before"),
        ("payments", "after"),
    ],
)
async def test_a_cursor_that_is_not_a_position_is_bad_user_input(
    gql: GraphQLClient, connection: str, argument: str
) -> None:
    await funded(gql, "acct", 100, 0)
    await pay(gql, "acct", 10, 1)
    if connection == "accounts":
        query = "query($c: String) { accounts(after: $c) { nodes { id } } }"
    else:
        query = (
            f'query($c: String) {{ account(id: "acct") {{ {connection}({argument}: $c) '
            "{ nodes { id } } } }"
        )
    for cursor in BAD_CURSORS:
        # ASCII JSON, so a lone surrogate travels as its escape.
        content = json.dumps({"query": query, "variables": {"c": cursor}})
        response = await gql.http.post(
            "/graphql", content=content, headers={"Content-Type": "application/json"}
        )
        body = response.json()
        codes = [e["extensions"]["code"] for e in body.get("errors", [])]
        assert codes == ["BAD_USER_INPUT"], (cursor[:20], body)
        assert "Traceback" not in json.dumps(body)
        assert len(body["errors"][0]["message"]) < 200, body


async def test_every_cursor_the_server_gives_is_taken_back(gql: GraphQLClient) -> None:
    await funded(gql, "a.b:c@d-e_f", 100, 0)
    await funded(gql, "Z", 100, 0)
    await transfer(gql, "Z", "a.b:c@d-e_f", 7, 2)
    await pay(gql, "Z", 10, 3)
    data = await gql.ok("{ accounts { edges { cursor node { id } } } }")
    for edge in data["accounts"]["edges"]:
        page = await gql.ok(
            "query($c: String) { accounts(after: $c) { nodes { id } } }", {"c": edge["cursor"]}
        )
        assert edge["node"]["id"] not in [n["id"] for n in page["accounts"]["nodes"]]
    data = await gql.ok(
        '{ account(id: "Z") { transactions { edges { cursor } } payments { edges { cursor } } } }'
    )
    for connection, argument in (("transactions", "after"), ("transactions", "before")):
        for edge in data["account"][connection]["edges"]:
            await gql.ok(
                f'query($c: String) {{ account(id: "Z") {{ {connection}({argument}: $c) '
                "{ nodes { id } } } }",
                {"c": edge["cursor"]},
            )
    for edge in data["account"]["payments"]["edges"]:
        await gql.ok(
            'query($c: String) { account(id: "Z") { payments(after: $c) { nodes { id } } } }',
            {"c": edge["cursor"]},
        )
