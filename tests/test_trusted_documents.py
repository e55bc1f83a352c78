"""Trusted documents: sent by id (`documentId`, or Apollo's persisted query hash), run
straight from the cache; refused by id when unknown; and a mode that runs nothing else."""

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from tests.conftest import GraphQLClient, MakeClient
from tests.operations import funded
from tests.servers import Serve

ROOT = Path(__file__).resolve().parents[1]
BALANCE = "query Balance($id: ID!) { account(id: $id) { id balance } }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def documents_cli(*files: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bank_graphql.ops.cli", "documents", *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True)


def own_manifest() -> dict[str, str]:
    manifest: dict[str, str] = json.loads(documents_cli().stdout)
    return manifest


def documents_the_project_sends() -> dict[str, str]:
    """The documents of the examples and the bench, as their own code holds them."""
    sys.path.insert(0, str(ROOT))
    from bench import operations

    spec = importlib.util.spec_from_file_location("bulk", ROOT / "examples/bulk_transfers.py")
    assert spec is not None
    assert spec.loader is not None
    bulk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bulk)
    js = (ROOT / "examples/frontend/live.js").read_text()
    entry = re.search(r'const ENTRY = "(.*?)";', js)
    assert entry is not None
    found = dict(re.findall(r"const (HISTORY|LIVE) = `(.*?)`;", js, re.S))
    assert set(found) == {"HISTORY", "LIVE"}
    return {
        **{name: text.replace("${ENTRY}", entry.group(1)) for name, text in found.items()},
        "bulk": bulk.TRANSFER_BATCH,
        **{name: getattr(operations, name) for name in ("TRANSFER", "DEPOSIT", "PAY")},
        "TRANSFER_BATCH": operations.TRANSFER_BATCH,
    }


def test_every_document_the_project_sends_is_trusted() -> None:
    manifest = own_manifest()
    for name, text in documents_the_project_sends().items():
        assert manifest.get(f"sha256:{sha(text)}") == text, name


async def post(client: GraphQLClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.http.post("/graphql", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def codes(answer: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in answer.get("errors", [])]


async def test_a_trusted_document_runs_by_its_id(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 100)
    transfer = documents_the_project_sends()["TRANSFER"]
    await funded(gql, "bob", 0)
    move = {"sourceAccountId": "alice", "targetAccountId": "bob", "amount": 7}
    variables = {"input": {**move, "timestamp": 2_000}}
    for document_id in (f"sha256:{sha(transfer)}", sha(transfer)):
        answer = await post(gql, {"documentId": document_id, "variables": variables})
        assert answer["data"]["transfer"]["errors"] == [], answer
    apq = {"persistedQuery": {"version": 1, "sha256Hash": sha(transfer)}}
    answer = await post(gql, {"extensions": apq, "variables": variables})
    assert answer["data"]["transfer"]["errors"] == []
    data = await gql.ok(BALANCE, {"id": "bob"})
    assert data["account"]["balance"] == 21


async def test_an_unknown_id_is_refused_and_changes_nothing(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 100)
    for body in (
        {"documentId": f"sha256:{'0' * 64}"},
        {"documentId": "nonsense"},
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab" * 32}}},
    ):
        answer = await post(gql, {**body, "variables": {"id": "alice"}})
        assert codes(answer) == ["PERSISTED_QUERY_NOT_FOUND"], answer
        assert answer["data"] is None
    response = await gql.http.post(
        "/graphql",
        json={"documentId": f"sha256:{'0' * 64}"},
        headers={"Accept": "application/graphql-response+json"},
    )
    assert response.status_code == 400
    assert codes(response.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_a_persisted_query_is_remembered_by_its_hash(gql: GraphQLClient) -> None:
    """Apollo's automatic persisted queries: the hash alone is unknown, then hash and text
    register it, then the hash alone runs it. A hash that is not the text's is refused."""
    await funded(gql, "alice", 100)
    apq = {"persistedQuery": {"version": 1, "sha256Hash": sha(BALANCE)}}
    variables = {"id": "alice"}
    first = await post(gql, {"extensions": apq, "variables": variables})
    assert codes(first) == ["PERSISTED_QUERY_NOT_FOUND"]
    registered = await post(gql, {"extensions": apq, "query": BALANCE, "variables": variables})
    assert registered == {"data": {"account": {"id": "alice", "balance": 100}}}
    again = await post(gql, {"extensions": apq, "variables": variables})
    assert again == registered
    wrong = {"persistedQuery": {"version": 1, "sha256Hash": sha("{ __typename }")}}
    answer = await post(gql, {"extensions": wrong, "query": BALANCE, "variables": variables})
    assert codes(answer) == ["BAD_REQUEST"]
    answer = await post(gql, {"documentId": sha("{ __typename }"), "query": BALANCE})
    assert codes(answer) == ["BAD_REQUEST"]


async def test_by_id_a_document_is_neither_parsed_nor_validated_again(
    gql: GraphQLClient,
) -> None:
    history = documents_the_project_sends()["HISTORY"]
    schema = gql_schema(gql)
    body = {"documentId": sha(history), "variables": {"account": "x", "first": 5}}
    assert await post(gql, body) == {"data": {"account": None}}
    parsed, validated = schema.documents.parsed, schema.documents.validated
    for _ in range(3):
        assert await post(gql, body) == {"data": {"account": None}}
    assert (schema.documents.parsed, schema.documents.validated) == (parsed, validated)


def gql_schema(client: GraphQLClient) -> Any:
    transport: Any = client.http._transport
    return transport.app.state.schema


async def test_trusted_only_runs_nothing_else(make_client: MakeClient) -> None:
    client = await make_client(trusted_only=True)
    sent = documents_the_project_sends()
    answer = await post(client, {"query": BALANCE, "variables": {"id": "alice"}})
    assert codes(answer) == ["DOCUMENT_NOT_TRUSTED"]
    assert answer["data"] is None
    apq = {"persistedQuery": {"version": 1, "sha256Hash": sha(BALANCE)}}
    answer = await post(client, {"extensions": apq, "query": BALANCE, "variables": {"id": "a"}})
    assert codes(answer) == ["DOCUMENT_NOT_TRUSTED"]
    answer = await post(client, {"extensions": apq, "variables": {"id": "a"}})
    assert codes(answer) == ["PERSISTED_QUERY_NOT_FOUND"]
    # A trusted document runs, by id or as its exact text (not as an equivalent one).
    body = {"variables": {"account": "x", "first": 5}}
    assert await post(client, {**body, "documentId": sha(sent["HISTORY"])}) == {
        "data": {"account": None}
    }
    assert await post(client, {**body, "query": sent["HISTORY"]}) == {"data": {"account": None}}
    answer = await post(client, {**body, "query": sent["HISTORY"] + " "})
    assert codes(answer) == ["DOCUMENT_NOT_TRUSTED"]
    response = await client.http.get(
        "/graphql", params={"query": BALANCE, "variables": '{"id": "a"}'}
    )
    assert codes(response.json()) == ["DOCUMENT_NOT_TRUSTED"]


async def test_an_operators_manifest_is_trusted(make_client: MakeClient, tmp_path: Path) -> None:
    document = tmp_path / "balance.graphql"
    document.write_text(BALANCE)
    out = documents_cli(document)
    assert out.returncode == 0, out.stderr
    manifest = tmp_path / "manifest.json"
    manifest.write_text(out.stdout)
    client = await make_client(trusted_only=True, trusted_documents=str(manifest))
    answer = await post(client, {"documentId": f"sha256:{sha(BALANCE)}", "variables": {"id": "a"}})
    assert answer == {"data": {"account": None}}
    bad = tmp_path / "bad.graphql"
    bad.write_text("{ nope }")
    refused = documents_cli(bad)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "nope" in refused.stderr


@pytest.mark.parametrize(
    "body",
    [
        {"documentId": 5},
        {"documentId": {"sha256": "x"}, "query": "{ __typename }"},
        {"documentId": None, "query": 5},
        {"documentId": f"sha256:{sha(BALANCE)}", "query": [1]},
    ],
)
async def test_odd_ids_are_bad_requests(gql: GraphQLClient, body: dict[str, Any]) -> None:
    response = await gql.http.post("/graphql", json=body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_a_get_by_id_runs_whatever_it_accepts(gql: GraphQLClient) -> None:
    """Without `query`, a GET that accepts anything would have been a browser asking for
    the playground page: with a document id it is a request to run."""
    history = documents_the_project_sends()["HISTORY"]
    params = {"documentId": sha(history), "variables": '{"account": "x", "first": 1}'}
    for accept in ("*/*", "text/html, */*", None):
        headers = {} if accept is None else {"Accept": accept}
        response = await gql.http.get("/graphql", params=params, headers=headers)
        assert response.status_code == 200, (accept, response.text[:100])
        assert response.json() == {"data": {"account": None}}


async def test_documents_by_id_over_websocket(serve: Serve, database_url: str) -> None:
    """A subscribe names its document by id too, or sends a trusted one's exact text; in
    trusted-only mode any other text is refused before it is parsed or validated."""
    server = serve("--database-url", database_url, "--trusted-only")
    history = documents_the_project_sends()["HISTORY"]
    url = f"ws://127.0.0.1:{server.port}/graphql"
    async with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
        variables = {"account": "x", "first": 1}
        by_id = {"documentId": f"sha256:{sha(history)}", "variables": variables}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": by_id}))
        assert json.loads(await ws.recv())["payload"] == {"data": {"account": None}}
        assert json.loads(await ws.recv())["type"] == "complete"
        apq = {"persistedQuery": {"version": 1, "sha256Hash": sha(history)}}
        payload = {"extensions": apq, "variables": variables}
        await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": payload}))
        assert json.loads(await ws.recv())["payload"] == {"data": {"account": None}}
        assert json.loads(await ws.recv())["type"] == "complete"
        for n, query in enumerate(("{ (", "{ nosuch }", BALANCE)):
            payload = {"query": query}
            await ws.send(json.dumps({"id": f"x{n}", "type": "subscribe", "payload": payload}))
            answer = json.loads(await ws.recv())
            assert answer["type"] == "error", answer
            assert [e["extensions"]["code"] for e in answer["payload"]] == ["DOCUMENT_NOT_TRUSTED"]
        as_text = {"query": history, "variables": variables}
        await ws.send(json.dumps({"id": "t", "type": "subscribe", "payload": as_text}))
        assert json.loads(await ws.recv())["payload"] == {"data": {"account": None}}
        assert json.loads(await ws.recv())["type"] == "complete"
        unknown = {"documentId": f"sha256:{'0' * 64}"}
        await ws.send(json.dumps({"id": "u", "type": "subscribe", "payload": unknown}))
        answer = json.loads(await ws.recv())
        assert [e["extensions"]["code"] for e in answer["payload"]] == ["PERSISTED_QUERY_NOT_FOUND"]


def test_a_document_is_counted_at_its_size_in_memory() -> None:
    """Text of four-byte characters costs four bytes a character: the cache's budget counts
    what it holds, not how many characters."""
    from bank_graphql.api.schema import build_schema

    schema = build_schema()
    text = '{ account(id: "' + "\U0001f600" * 10_000 + '") { id } }'
    assert not schema.document_errors(text)
    entry = schema.documents.get(text)
    assert entry is not None
    assert entry.size_bytes >= 4 * len(text)


def test_serve_refuses_a_manifest_it_cannot_use(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({f"sha256:{sha('{ nope }')}": "{ nope }"}))
    for manifest, words in ((deep, "cannot read"), (invalid, "nope")):
        command = [sys.executable, "-m", "bank_graphql.ops.cli", "serve"]
        command += ["--database-url", "postgresql://nobody@127.0.0.1:1/none"]
        command += ["--trusted-documents", str(manifest)]
        refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2, refused.stderr[-500:]
        assert refused.stderr.count("\n") == 1, refused.stderr[-500:]
        assert words in refused.stderr
