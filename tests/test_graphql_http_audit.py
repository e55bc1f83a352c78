"""GraphQL over HTTP with both response media types, against a real server with access
control on: graphql-http's own server audit (every one of its checks, run with node), and
requests of our own for the statuses, media types and bodies it implies.

`application/graphql-response+json` answers a request that never ran (a parse, validation
or variable-coercion error) with a 4xx and no `data`; `application/json` answers it with
200 and `data: null`, as it always has. The audit skips without node and npm, unless
BANK_REQUIRE_NODE=1 (then it fails)."""

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bank_graphql.ledger import Role
from tests.conftest import cloned_database, issue_key
from tests.servers import Server, running

GRAPHQL_HTTP_VERSION = "1.23.1"
GRAPHQL_JS_VERSION = "16.15.0"
"""graphql-http's peer dependency allows graphql >=0.11 <=17; 17 needs node 22 or later."""
AUDIT_SCRIPT = Path(__file__).parent / "fixtures" / "graphql_http_audit.cjs"
AUDIT_CHECKS = 61

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
TYPENAME = {"query": "{ __typename }"}


@dataclass(frozen=True)
class Audited:
    server: Server
    admin_key: str
    reader_key: str

    def post(self, body: object, accept: str | None, key: str | None = "admin") -> httpx.Response:
        headers = {} if accept is None else {"Accept": accept}
        if key is not None:
            token = self.admin_key if key == "admin" else self.reader_key
            headers["Authorization"] = f"Bearer {token}"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = JSON
        return httpx.post(
            f"{self.server.base}/graphql", content=content, headers=headers, timeout=30
        )


@pytest.fixture(scope="module")
def audited(
    server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Audited]:
    log = tmp_path_factory.mktemp("graphql-http-server") / "server.log"
    with (
        cloned_database(server_url, template_db, "bank_media") as url,
        running("--database-url", url, log=log, auth=True) as server,
    ):
        audited = Audited(server, server.admin_key, asyncio.run(issue_key(url, Role.READER)))
        # The key ring loads a new key at its next poll (a quarter of a second).
        deadline = time.monotonic() + 10
        while audited.post(TYPENAME, JSON, key="reader").status_code == 401:
            assert time.monotonic() < deadline, "the reader key was never accepted"
            time.sleep(0.05)
        yield audited


# --- graphql-http's audit ----------------------------------------------------------------


def _node_and_npm() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("BANK_REQUIRE_NODE") == "1":
            pytest.fail("BANK_REQUIRE_NODE=1 and node or npm is not on PATH")
        pytest.skip("node and npm are needed for graphql-http's audit (BANK_REQUIRE_NODE=1 fails)")
    return node, npm


def _install_graphql_http(npm: str, folder: Path) -> Path:
    """graphql-http and graphql at their pinned versions in `folder`; its node_modules."""
    package = {
        "private": True,
        "dependencies": {"graphql-http": GRAPHQL_HTTP_VERSION, "graphql": GRAPHQL_JS_VERSION},
    }
    (folder / "package.json").write_text(json.dumps(package))
    installed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, f"npm install failed:\n{installed.stderr[-3000:]}"
    return folder / "node_modules"


@pytest.fixture(scope="module")
def graphql_http(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """node, and the node_modules folder graphql-http is installed in."""
    node, npm = _node_and_npm()
    return node, _install_graphql_http(npm, tmp_path_factory.mktemp("graphql-http"))


def test_graphql_http_audit_passes_every_check(
    graphql_http: tuple[str, Path], audited: Audited
) -> None:
    node, modules = graphql_http
    ran = subprocess.run(
        [node, str(AUDIT_SCRIPT), f"{audited.server.base}/graphql"],
        env={
            **os.environ,
            "NODE_PATH": str(modules),
            "AUDIT_AUTHORIZATION": f"Bearer {audited.admin_key}",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, f"the audit did not run:\n{ran.stderr[-3000:]}"
    results: list[dict[str, Any]] = json.loads(ran.stdout)
    failed = [
        f"{r['status']} {r['id']} {r['name']}: {r.get('reason')} (got {r.get('response')})"
        for r in results
        if r["status"] != "ok"
    ]
    assert not failed, "graphql-http audit checks not passed:\n" + "\n".join(failed)
    assert len(results) == AUDIT_CHECKS


# --- request errors in each media type ---------------------------------------------------

# Each stage reached for real: the audit's own "validation" document does not parse, and
# its "variable coercion" one fails validation (the variable is never used).
PAGES_OF_PAGES = "accounts(first: 100) { nodes { transactions(first: 100) { nodes { id } } } }"
REQUEST_ERRORS = {
    "parse": ({"query": "{ account(id: "}, "GRAPHQL_PARSE_FAILED"),
    "validation": ({"query": "{ noSuchField }"}, "GRAPHQL_VALIDATION_FAILED"),
    "cost limit": (
        {"query": "{ " + " ".join(f"a{i}: {PAGES_OF_PAGES}" for i in range(3)) + " }"},
        "QUERY_TOO_COSTLY",
    ),
    "variable coercion": (
        {"query": "query ($id: ID!) { account(id: $id) { id } }", "variables": {"id": None}},
        "BAD_USER_INPUT",
    ),
}


def _codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json()["errors"]]


@pytest.mark.parametrize("error", REQUEST_ERRORS, ids=list(REQUEST_ERRORS))
def test_a_request_error_is_400_in_graphql_response_json_and_200_in_json(
    audited: Audited, error: str
) -> None:
    body, code = REQUEST_ERRORS[error]
    response = audited.post(body, GRAPHQL_RESPONSE)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert "data" not in response.json()
    assert _codes(response) == [code]

    legacy = audited.post(body, JSON)
    assert legacy.status_code == 200, legacy.text
    assert legacy.headers["content-type"] == JSON
    assert legacy.json()["data"] is None
    assert _codes(legacy) == [code]


def test_a_query_that_runs_is_200_in_graphql_response_json(audited: Audited) -> None:
    response = audited.post(TYPENAME, GRAPHQL_RESPONSE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert response.json() == {"data": {"__typename": "Query"}}


def test_a_field_error_is_200_with_data_in_graphql_response_json(audited: Audited) -> None:
    """The operation ran: a field error is a partial response, not a failed request."""
    response = audited.post(
        {"query": "{ accounts(first: 1000) { nodes { id } } }"}, GRAPHQL_RESPONSE
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert response.json()["data"] is None
    assert _codes(response) == ["BAD_USER_INPUT"]


def test_a_forbidden_operation_is_403_in_graphql_response_json(audited: Audited) -> None:
    mutation = {"query": 'mutation { createAccount(input: {id: "x"}) { account { id } } }'}
    response = audited.post(mutation, GRAPHQL_RESPONSE, key="reader")
    assert response.status_code == 403, response.text
    assert "data" not in response.json()
    assert _codes(response) == ["FORBIDDEN"]
    legacy = audited.post(mutation, JSON, key="reader")
    assert (legacy.status_code, _codes(legacy)) == (200, ["FORBIDDEN"])


# --- choosing the media type -------------------------------------------------------------

NEGOTIATED = {
    None: JSON,
    "*/*": JSON,
    "application/*": JSON,
    "text/html": JSON,
    JSON: JSON,
    GRAPHQL_RESPONSE: GRAPHQL_RESPONSE,
    f"{GRAPHQL_RESPONSE}; charset=utf-8, {JSON}; charset=utf-8": GRAPHQL_RESPONSE,
    f"{JSON}, {GRAPHQL_RESPONSE}": JSON,
    f"{JSON};q=0.9, {GRAPHQL_RESPONSE}": GRAPHQL_RESPONSE,
    f"{GRAPHQL_RESPONSE};q=0.5, {JSON}": JSON,
    f"*/*, {GRAPHQL_RESPONSE}": GRAPHQL_RESPONSE,
    f"{JSON};q=0, */*": GRAPHQL_RESPONSE,
    f"{GRAPHQL_RESPONSE};q=0": JSON,
}


@pytest.mark.parametrize("accept", NEGOTIATED, ids=[str(a) for a in NEGOTIATED])
def test_the_answer_is_in_the_type_the_client_prefers(audited: Audited, accept: str | None) -> None:
    response = audited.post(REQUEST_ERRORS["parse"][0], accept)
    chosen = NEGOTIATED[accept]
    assert response.headers["content-type"].split(";")[0] == chosen
    assert response.status_code == (400 if chosen == GRAPHQL_RESPONSE else 200)


# --- refusals before GraphQL runs --------------------------------------------------------

BODY_TOO_LARGE = b'{"query": "' + b" " * (1024 * 1024 + 1) + b'{ __typename }"}'


def _refusals(audited: Audited, accept: str) -> dict[str, tuple[httpx.Response, int, str]]:
    graphql = f"{audited.server.base}/graphql"
    key = {"Authorization": f"Bearer {audited.admin_key}", "Accept": accept}
    json_type = {"Content-Type": JSON}
    return {
        "no credential": (audited.post(TYPENAME, accept, key=None), 401, "UNAUTHENTICATED"),
        "bad JSON": (audited.post(b'{"query": ', accept), 400, "BAD_REQUEST"),
        "no query": (audited.post({"variables": {}}, accept), 400, "BAD_REQUEST"),
        "not JSON": (
            httpx.post(graphql, content=b"{}", headers={**key, "Content-Type": "text/plain"}),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        "too large": (
            httpx.post(graphql, content=BODY_TOO_LARGE, headers={**key, **json_type}),
            413,
            "REQUEST_TOO_LARGE",
        ),
        "mutation over GET": (
            httpx.get(graphql, params={"query": "mutation { __typename }"}, headers=key),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        "no such path": (httpx.get(f"{graphql}/nope", headers=key), 404, "NOT_FOUND"),
    }


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, JSON])
def test_refusals_before_graphql_keep_their_code_in_the_negotiated_type(
    audited: Audited, accept: str
) -> None:
    for name, (response, status, code) in _refusals(audited, accept).items():
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"].split(";")[0] == accept, name
        assert _codes(response) == [code], name
        assert ("data" in response.json()) == (accept == JSON), (name, response.text)
