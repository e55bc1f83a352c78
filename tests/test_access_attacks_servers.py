"""Access control attacked through real `bank-graphql serve` processes: no key or token
(nor a part of one) in the log or the metrics whatever a client sends, and websockets
given odd `connection_init` payloads."""

import asyncio
import json
import subprocess
import time
from pathlib import Path

import httpx
import jwt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import cloned_database
from tests.servers import BIN, Serve, Server, launch

SECRET = "attack-tests: an HS256 secret that is long enough 0123456789"
PROTOCOL = "graphql-transport-ws"


def _keys(*args: str) -> str:
    done = subprocess.run(
        [str(BIN), "keys", *args], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout


def _parts(token: str) -> list[str]:
    """The token and the pieces of it that must not appear either."""
    if token.startswith("bgk_"):
        secret = token.split("_")[2]
        return [token, secret[:16], secret[-16:]]
    return [token, token.rsplit(".", 1)[-1][:16]]


async def _ws_probe(server: Server, payload: object, token: str) -> int | None:
    url = f"ws://127.0.0.1:{server.port}/graphql"
    async with connect(url, subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            await asyncio.wait_for(ws.recv(), 5)
            operation = {"query": "{ viewer { principal } }", "variables": {"t": token}}
            await ws.send(json.dumps({"id": token, "type": "subscribe", "payload": operation}))
            await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": "{"}}))
            await ws.send(json.dumps({"type": "nonsense " + token}))
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed:
            pass
        return ws.close_code


async def test_no_token_reaches_the_log_or_the_metrics(
    serve: Serve, database_url: str, tmp_path: Path
) -> None:
    server = serve("--database-url", database_url, env={"BANK_JWT_SECRET": SECRET}, auth=True)
    admin = server.admin_key
    reader = _keys("create", "--role", "reader", "--database-url", database_url).splitlines()[-1]
    revoked = _keys("create", "--role", "operator", "--database-url", database_url)
    revoked = revoked.splitlines()[-1]
    _keys("revoke", revoked.split("_")[1], "--database-url", database_url)
    now = int(time.time())
    tokens = [
        admin,
        reader,
        revoked,
        admin[:-4] + "beef",
        jwt.encode({"sub": "probe", "role": "admin", "exp": now + 600}, SECRET),
        jwt.encode({"sub": "probe", "role": "admin", "exp": now + 600}, SECRET + "!"),
        jwt.encode({"sub": "probe", "role": "admin", "exp": now - 600}, SECRET),
        jwt.encode({"sub": "probe", "role": "nobody", "exp": now + 600}, SECRET),
    ]
    documents = [
        "{ viewer { principal } }",
        'mutation { deposit(input: {accountId: "x", amount: 1}) { errors { code message } } }',
        "{ nope }",
        "{",
    ]
    async with httpx.AsyncClient(base_url=server.base, timeout=10) as http:
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}"}
            for document in documents:
                body = {"query": document, "variables": {"token": token}}
                await http.post("/graphql", json=body, headers=headers)
            await http.get("/graphql", params={"query": "{ __typename }", "t": token})
            await http.get(f"/missing/{token}", headers=headers)
            await http.get("/metrics", headers=headers)
            await http.post("/graphql", content=token, headers=headers)
            for payload in ({"Authorization": f"Bearer {token}"}, {"Authorization": token}, token):
                await _ws_probe(server, payload, token)
        metrics = (await http.get("/metrics", headers={"Authorization": f"Bearer {admin}"})).text
    await asyncio.sleep(0.5)
    log = server.log.read_text(errors="replace")
    assert log.count(admin) == 1  # the first start's own line, and nothing else
    log = log.replace(f"admin key: {admin}", "")
    found = {
        part[:12]: (where, text.count(part))
        for token in tokens
        for part in _parts(token)
        for where, text in (("log", log), ("metrics", metrics))
        if part in text
    }
    assert found == {}
    assert SECRET not in log
    assert SECRET not in metrics


async def test_odd_connection_init_payloads_are_refused(serve: Serve, database_url: str) -> None:
    server = serve("--database-url", database_url, auth=True)
    admin = server.admin_key
    refused = {
        "none": None,
        "empty": {},
        "not an object": f"Bearer {admin}",
        "a list": [f"Bearer {admin}"],
        "value not a string": {"Authorization": [f"Bearer {admin}"]},
        "no scheme": {"Authorization": admin},
        "another scheme": {"Authorization": f"Basic {admin}"},
        "headers nested": {"headers": {"Authorization": f"Bearer {admin}"}},
        "changed key": {"Authorization": f"Bearer {admin[:-1]}0"},
    }
    codes = {name: await _ws_probe(server, payload, "x") for name, payload in refused.items()}
    assert all(code in (4400, 4403) for code in codes.values()), codes
    assert admin not in server.log.read_text().replace(f"admin key: {admin}", "")


def test_servers_starting_at_once_on_an_empty_database_make_one_admin_key(
    server_url: str, tmp_path: Path
) -> None:
    """Not a migrated clone: a database with nothing in it, so the migrations race too."""
    with cloned_database(server_url, "template0", prefix="atk_empty") as url:
        servers = [
            launch("--database-url", url, log=tmp_path / f"race-{i}.log", auth=True)
            for i in range(4)
        ]
        try:
            for server in servers:
                server.wait_healthy(60)
            printed = [s.admin_key for s in servers if "admin key:" in s.log.read_text()]
            assert len(printed) == 1
            listed = _keys("list", "--database-url", url)
            assert listed.count("first admin key") == 1
            assert printed[0] not in listed
            key_id = printed[0].split("_")[1]
            _keys("revoke", key_id, "--database-url", url)
        finally:
            for server in servers:
                server.stop()
        # Every key revoked: a start does not make (and show) a new ADMIN key.
        again = launch("--database-url", url, log=tmp_path / "again.log", auth=True)
        try:
            again.wait_healthy(60)
            assert "admin key:" not in again.log.read_text()
            response = httpx.post(
                f"{again.base}/graphql",
                json={"query": "{ __typename }"},
                headers={"Authorization": f"Bearer {printed[0]}"},
            )
            assert response.status_code == 401
        finally:
            again.stop()
