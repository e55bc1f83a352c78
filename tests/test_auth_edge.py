"""Credentials at the edge: the one 401, API keys (expiry, revocation, last use), JWTs
(every algorithm, and every way a token can be wrong), /metrics by role, the GraphiQL key
bar, the request log's principal; and the same through real `bank-graphql serve`
processes: the first ADMIN key, revocation across processes, websockets."""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bank_graphql.edge.settings import JwtSettings
from bank_graphql.ledger import KeyRingLimits, Role, list_api_keys
from tests.conftest import GraphQLClient, MakeClient, issue_key
from tests.servers import BIN, Serve, Server

LIVE = KeyRingLimits()
"""The key ring as servers run it (make_client's is quiet unless a key is unknown)."""
SECRET = "a-test-secret-long-enough-for-hs256-and-for-hs512-too-0123456789"
TYPENAME = {"query": "{ __typename }"}
CREATE = {"query": 'mutation { createAccount(input: {id: "nope"}) { errors { code } } }'}
LOOK = {"query": '{ account(id: "nope") { id } }'}


def assert_unauthenticated(response: httpx.Response, token: str | None = None) -> str:
    """The one 401: status, header, coded body; the token never echoed. Its message."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    if token:
        assert token not in response.text
    message: str = error["message"]
    return message


async def post(client: GraphQLClient, token: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return await client.http.post("/graphql", json=body, headers=headers)


# --- API keys over HTTP ------------------------------------------------------------------


async def test_every_bad_credential_gets_the_same_401_and_nothing_runs(
    make_client: MakeClient, database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    client = await make_client(key=None, key_ring=LIVE)
    admin = await make_client()
    revoked = await issue_key(database_url, Role.OPERATOR)
    expired = await issue_key(database_url, Role.OPERATOR, expires_in_days=1)
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE hash = %s", (_hash(revoked),))
    await db.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE hash = %s",
        (_hash(expired),),
    )
    await asyncio.sleep(0.6)  # the key ring reloads within a quarter of a second
    unknown = "bgk_abcdefghijkl_" + "0" * 64
    wrong_secret = revoked[: -len("0" * 64)] + "f" * 64
    headers: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {revoked}"},
        {"Authorization": "Bearer bgk_short"},
        {"Authorization": f"Bearer {unknown}"},
        {"Authorization": f"Bearer {wrong_secret}"},
        {"Authorization": f"Bearer {revoked}"},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Bearer " + "x" * 20_000},
    ]
    messages = set()
    for header in headers:
        for body in (CREATE, TYPENAME):
            response = await client.http.post("/graphql", json=body, headers=header)
            messages.add(assert_unauthenticated(response, header.get("Authorization", "")[7:]))
    assert len(messages) == 1, messages
    # A GET with a query is a request like any other.
    response = await client.http.get("/graphql", params={"query": "{ __typename }"})
    assert_unauthenticated(response)
    assert (await admin.ok(LOOK["query"])) == {"account": None}


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def test_the_bearer_scheme_is_read_in_any_case(make_client: MakeClient) -> None:
    client = await make_client(key=None)
    admin = await make_client()
    key = admin.http.headers["authorization"].split()[1]
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = await client.http.post(
            "/graphql", json=TYPENAME, headers={"Authorization": f"{scheme} {key}"}
        )
        assert response.json() == {"data": {"__typename": "Query"}}


async def test_a_key_issued_while_the_server_runs_works_within_a_second(
    make_client: MakeClient, database_url: str
) -> None:
    client = await make_client(key=None)  # its key ring is woken by the unknown key
    key = await issue_key(database_url, Role.READER)
    deadline = time.monotonic() + 1.0
    while (response := await post(client, key, TYPENAME)).status_code != 200:
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.05)
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_last_use_is_written_by_the_server_within_seconds(
    make_client: MakeClient, database_url: str, db: psycopg.AsyncConnection[Any]
) -> None:
    client = await make_client(key=None, key_ring=LIVE)
    key = await issue_key(database_url, Role.READER)
    await asyncio.sleep(0.5)
    before = time.time()
    assert (await post(client, key, TYPENAME)).status_code == 200
    deadline = time.monotonic() + 15
    while True:
        used = [k.last_used_at for k in await list_api_keys(db) if k.role is Role.READER]
        if used[0] is not None:
            break
        assert time.monotonic() < deadline, "last_used_at never written"
        await asyncio.sleep(0.25)
    assert used[0].timestamp() >= before - 1


async def test_the_request_log_names_the_principal_never_the_key(
    make_client: MakeClient, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await make_client(key=None, key_ring=LIVE)
    key = await issue_key(database_url, Role.OPERATOR)
    key_id = key.split("_")[1]
    await asyncio.sleep(0.5)
    assert (await post(client, key, TYPENAME)).status_code == 200
    assert (await post(client, key + "0", TYPENAME)).status_code == 401
    principals = [getattr(r, "principal", None) for r in caplog.records]
    assert f"key:{key_id}" in principals
    for record in caplog.records:
        assert key not in record.getMessage()
        assert key not in json.dumps(record.__dict__, default=str)


# --- /metrics, /health and the GraphiQL page ---------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.ADMIN, 200), (Role.READER, 200), (Role.OPERATOR, 403), (Role.CUSTOMER, 403)],
)
async def test_metrics_by_role(
    make_client: MakeClient, database_url: str, role: Role, status: int
) -> None:
    client = await make_client(key=None, key_ring=LIVE)
    assert_unauthenticated(await client.http.get("/metrics"))
    key = await issue_key(database_url, role, ["acc1"] if role is Role.CUSTOMER else None)
    await asyncio.sleep(0.5)
    response = await client.http.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    else:
        assert "bank_graphql_errors" in response.text


async def test_health_and_the_graphiql_page_need_no_credential(make_client: MakeClient) -> None:
    client = await make_client(key=None)
    assert (await client.http.get("/health")).json() == {"status": "ok"}
    page = await client.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert 'id="bank-api-key"' in page.text
    assert "sessionStorage" in page.text
    assert "fetch: bankFetch" in page.text
    assert "wsConnectionParams: bankConnectionParams" in page.text


async def test_without_access_control_every_request_is_anonymous(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = await make_client(key=None, auth=False)
    assert (await post(client, None, TYPENAME)).json() == {"data": {"__typename": "Query"}}
    assert (await client.http.get("/metrics")).status_code == 200
    assert "anonymous" in [getattr(r, "principal", None) for r in caplog.records]


# --- JWTs --------------------------------------------------------------------------------


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "alice", "role": "operator", "exp": int(time.time()) + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _public_pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_by_hand(claims: dict[str, Any], secret: bytes, alg: str = "HS256") -> str:
    """A token PyJWT would refuse to make: an HMAC keyed with a public key's PEM text."""
    signing_input = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    signing_input += "." + _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


async def _jwt_client(make_client: MakeClient, **settings: Any) -> GraphQLClient:
    return await make_client(key=None, jwt=JwtSettings(**settings))


async def _accepted(client: GraphQLClient, token: str) -> bool:
    response = await post(client, token, TYPENAME)
    if response.status_code == 401:
        assert_unauthenticated(response, token)
        return False
    assert response.json() == {"data": {"__typename": "Query"}}, response.text
    return True


@pytest.mark.parametrize(
    ("private", "alg"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
    ids=["RS256", "ES256", "EdDSA"],
)
async def test_a_jwt_signed_with_the_private_key_of_the_pem_is_accepted(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, private: Any, alg: str
) -> None:
    caplog.set_level(logging.INFO)
    pem = _public_pem(private)
    client = await _jwt_client(make_client, public_key_pem=pem, secret=SECRET)
    assert await _accepted(client, jwt.encode(_claims(), private, algorithm=alg))
    assert "jwt:alice" in [getattr(r, "principal", None) for r in caplog.records]
    # The same claims under the shared secret: each key verifies its own algorithm.
    assert await _accepted(client, jwt.encode(_claims(), SECRET, algorithm="HS256"))
    other = ec.generate_private_key(ec.SECP256R1()) if alg != "ES256" else None
    if other is not None:  # a key of another type than the PEM's: no key for its algorithm
        assert not await _accepted(client, jwt.encode(_claims(), other, algorithm="ES256"))


async def test_hs256_with_a_secret_and_its_claims(make_client: MakeClient) -> None:
    client = await _jwt_client(make_client, secret=SECRET)
    accepted = [
        _claims(),
        _claims(role="ADMIN"),
        _claims(role="Reader"),
        _claims(role="customer", accounts=["acc1", "acc2"]),
        _claims(exp=int(time.time()) - 10),  # within the leeway
    ]
    for claims in accepted:
        assert await _accepted(client, jwt.encode(claims, SECRET, algorithm="HS256")), claims
    refused = [
        _claims(role="customer"),  # a customer must be limited to accounts
        _claims(role="operator", accounts=[]),  # limited to no account at all
        _claims(role="customer", accounts="acc1"),
        _claims(role="operator", accounts=["not an id!"]),
        _claims(role="teller"),
        _claims(role=None),
        _claims(sub=None),
        _claims(sub=""),
        _claims(exp=None),
        _claims(exp=int(time.time()) - 120),
        _claims(nbf=int(time.time()) + 600),
    ]
    for claims in refused:
        assert not await _accepted(client, jwt.encode(claims, SECRET, algorithm="HS256")), claims
    assert not await _accepted(client, jwt.encode(_claims(), SECRET + "x", algorithm="HS256"))
    unsigned = jwt.encode(_claims(), None, algorithm="none")
    assert not await _accepted(client, unsigned)
    assert not await _accepted(client, hs256_by_hand(_claims(), SECRET.encode(), alg="none"))
    assert not await _accepted(client, jwt.encode(_claims(), SECRET, algorithm="HS512"))


async def test_issuer_audience_and_claim_names_are_checked_when_configured(
    make_client: MakeClient,
) -> None:
    client = await _jwt_client(
        make_client,
        secret=SECRET,
        issuer="https://idp.example",
        audience="bank",
        role_claim="https://bank/role",
        subject_claim="uid",
    )

    def token(**claims: Any) -> str:
        base = {"uid": "bob", "https://bank/role": "reader", "exp": int(time.time()) + 60}
        base.update({"iss": "https://idp.example", "aud": "bank"}, **claims)
        return jwt.encode({k: v for k, v in base.items() if v is not None}, SECRET)

    assert await _accepted(client, token())
    assert await _accepted(client, token(aud=["other", "bank"]))
    for wrong in (
        {"iss": "https://evil.example"},
        {"iss": None},
        {"aud": "other"},
        {"aud": None},
        {"https://bank/role": None, "role": "reader"},
        {"uid": None, "sub": "bob"},
    ):
        assert not await _accepted(client, token(**wrong)), wrong


async def test_algorithm_confusion_is_refused(make_client: MakeClient) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _public_pem(private)
    forged = hs256_by_hand(_claims(role="admin"), pem.encode())
    for settings in ({"public_key_pem": pem}, {"public_key_pem": pem, "secret": SECRET}):
        client = await _jwt_client(make_client, **settings)
        assert not await _accepted(client, forged)
        assert await _accepted(client, jwt.encode(_claims(), private, algorithm="RS256"))
        # Also a PS256 token of the same RSA key: only the PEM's one algorithm is used.
        assert not await _accepted(client, jwt.encode(_claims(), private, algorithm="PS256"))


async def test_jwts_are_refused_when_none_is_configured(make_client: MakeClient) -> None:
    client = await make_client(key=None)
    assert not await _accepted(client, jwt.encode(_claims(), SECRET, algorithm="HS256"))


# --- real servers ------------------------------------------------------------------------


def keys_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "keys", *args], capture_output=True, text=True, check=check, timeout=120
    )


def gql_status(server: Server, key: str | None) -> int:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{server.base}/graphql", json=TYPENAME, headers=headers).status_code


def test_the_first_start_prints_an_admin_key_once(serve: Serve, database_url: str) -> None:
    first = serve("--database-url", database_url, auth=True)
    key = first.admin_key
    assert key.startswith("bgk_")
    assert gql_status(first, key) == 200
    assert gql_status(first, None) == 401
    assert first.stop() == 0
    second = serve("--database-url", database_url, auth=True)
    assert "admin key:" not in second.log.read_text()
    assert gql_status(second, key) == 200
    listed = keys_cli("list", "--database-url", database_url).stdout
    assert "first admin key" in listed
    assert key not in listed


def test_two_servers_starting_at_once_make_one_admin_key(
    serve: Serve, database_url: str, tmp_path: Path
) -> None:
    from tests.servers import launch

    servers = [
        launch("--database-url", database_url, log=tmp_path / f"race-{i}.log", auth=True)
        for i in range(3)
    ]
    try:
        for server in servers:
            server.wait_healthy(60)
        printed = [s for s in servers if "admin key:" in s.log.read_text()]
        assert len(printed) == 1
        listed = keys_cli("list", "--database-url", database_url).stdout
        assert listed.count("first admin key") == 1
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize(
    "args",
    [
        ["--no-auth", "--host", "0.0.0.0"],
        ["--no-auth", "--host", "192.168.1.10"],
        ["--jwt-public-key", "/nonexistent/key.pem"],
        ["--jwt-secret", "short"],
    ],
)
def test_serve_refuses_unsafe_or_broken_access_options(args: list[str]) -> None:
    result = subprocess.run(
        [str(BIN), "serve", "--database-url", "postgresql://127.0.0.1:1/none", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_refuses_a_file_that_is_not_a_public_key(tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    command = [str(BIN), "serve", "--database-url", "postgresql://127.0.0.1:1/none"]
    result = subprocess.run(
        [*command, "--jwt-public-key", str(pem)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "public key" in result.stderr


def test_revocation_reaches_every_server_process_within_a_second(
    serve: Serve, database_url: str
) -> None:
    servers = [serve("--database-url", database_url, auth=True)]
    servers.append(serve("--database-url", database_url, "--workers", "2", auth=True))
    created = keys_cli("create", "--role", "operator", "--database-url", database_url).stdout
    key = created.splitlines()[-1]
    key_id = key.split("_")[1]
    for server in servers:
        _until(partial(_answers, server, key, 200), 1.0)
    keys_cli("revoke", key_id, "--database-url", database_url)
    revoked_at = time.monotonic()
    for server in servers:
        _until(partial(_answers, server, key, 401), 1.0)
    assert time.monotonic() - revoked_at < 1.5
    # Every worker: fresh connections are spread over the second server's two workers.
    assert all(gql_status(s, key) == 401 for s in servers for _ in range(8))
    for server in servers:
        log = server.log.read_text()
        assert key not in log
        assert f"key:{key_id}" in log


def _answers(server: Server, key: str, status: int) -> bool:
    return gql_status(server, key) == status


def _until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


PROTOCOL = "graphql-transport-ws"


async def _ws_close(server: Server, payload: dict[str, Any] | None) -> int | None:
    url = f"ws://127.0.0.1:{server.port}/graphql"
    async with connect(url, subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await ws.send(json.dumps(message))
        return await _close_code(ws)


async def _close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed:
        pass
    return ws.close_code


async def test_websockets_need_a_credential_and_lose_it_on_revocation(
    serve: Serve, database_url: str
) -> None:
    server = serve("--database-url", database_url, auth=True)
    admin = server.admin_key
    assert await _ws_close(server, None) == 4403
    assert await _ws_close(server, {"Authorization": "Bearer bgk_nope"}) == 4403
    assert await _ws_close(server, {"Authorization": admin}) == 4403  # no scheme
    key = keys_cli("create", "--role", "reader", "--database-url", database_url).stdout
    key = key.splitlines()[-1]
    url = f"ws://127.0.0.1:{server.port}/graphql"
    async with connect(url, subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"authorization": f"bearer {key}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": TYPENAME}))
        assert json.loads(await ws.recv())["payload"] == {"data": {"__typename": "Query"}}
        assert json.loads(await ws.recv())["type"] == "complete"
        key_id = key.split("_")[1]
        await asyncio.to_thread(keys_cli, "revoke", key_id, "--database-url", database_url)
        revoked_at = time.monotonic()
        assert await _close_code(ws) == 4403
        assert time.monotonic() - revoked_at < 1.5
    assert key not in server.log.read_text()


async def test_a_key_works_the_moment_it_is_issued(
    make_client: MakeClient, database_url: str
) -> None:
    """A key issued after the server started works on its first request, over HTTP, before
    the key ring's next regular reload (here an hour away): a miss waits for a reload."""
    client = await make_client()
    key = await issue_key(database_url, Role.READER)
    response = await client.http.post(
        "/graphql",
        json={"query": "{ viewer { role } }"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"viewer": {"role": "READER"}}}
    unknown = await client.http.post(
        "/graphql",
        json={"query": "{ viewer { role } }"},
        headers={"Authorization": f"Bearer {key}x"},
    )
    assert unknown.status_code == 401
