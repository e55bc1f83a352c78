"""The hot path under access control: a request with a valid API key or JWT costs no round
trip of its own, and a request refused at the door (401, FORBIDDEN) costs none at all.
Counted on the wire by tests/test_round_trips.py's proxy."""

import asyncio
import time

import jwt

from bank_graphql.edge.settings import JwtSettings
from bank_graphql.ledger import ClockMode, Role
from tests.conftest import MakeClient, issue_key
from tests.test_round_trips import RoundTripCounter, counter  # noqa: F401 - the fixture

SECRET = "round-trip attacks: an HS256 secret long enough 0123456789"
TRANSFER = """
mutation { transfer(input: {sourceAccountId: "a", targetAccountId: "b", amount: 1,
                            timestamp: 5000}) { balance errors { code } } }"""
DEPOSIT = 'mutation { deposit(input: {accountId: "a", amount: 1}) { errors { code } } }'


async def test_a_valid_credential_adds_no_round_trip(
    make_client: MakeClient,
    counter: tuple[RoundTripCounter, str],  # noqa: F811 - the fixture
    database_url: str,
) -> None:
    proxy, url = counter
    admin = await make_client(ClockMode.CLIENT, database_url=url)
    for account in ("a", "b"):
        await admin.ok(
            "mutation($id: ID!) { createAccount(input: {id: $id, timestamp: 1000}) "
            "{ errors { code } } deposit(input: {accountId: $id, amount: 1000, "
            "timestamp: 1000}) { errors { code } } }",
            {"id": account},
        )
    customer_key = await issue_key(database_url, Role.CUSTOMER, ["a"])
    customer_jwt = jwt.encode(
        {"sub": "c", "role": "customer", "accounts": ["a"], "exp": int(time.time()) + 600},
        SECRET,
    )
    reader_jwt = jwt.encode({"sub": "r", "role": "reader", "exp": int(time.time()) + 600}, SECRET)
    clients = {
        token: await make_client(
            ClockMode.CLIENT, key=token, database_url=url, jwt=JwtSettings(secret=SECRET)
        )
        for token in (customer_key, customer_jwt, reader_jwt, "not-a-credential")
    }
    await asyncio.sleep(0.2)  # whatever the apps' start-up left running has run
    for token in (customer_key, customer_jwt):
        before = proxy.round_trips
        body = await clients[token].post(TRANSFER)
        assert body["data"]["transfer"]["errors"] == [], body
        assert proxy.round_trips - before == 1, token[:12]
    before = proxy.round_trips
    forbidden = await clients[reader_jwt].post(DEPOSIT)
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    refused = await clients["not-a-credential"].http.post("/graphql", json={"query": DEPOSIT})
    assert refused.status_code == 401
    await asyncio.sleep(0.2)
    assert proxy.round_trips - before == 0
