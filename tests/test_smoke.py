from tests.conftest import GraphQLClient
from tests.operations import balance, funded, pay, transfer


async def test_money_moves_end_to_end(gql: GraphQLClient, audit) -> None:
    await funded(gql, "alice", 1_000)
    await funded(gql, "bob", 0)
    moved = await transfer(gql, "alice", "bob", 300, 2_000)
    assert moved["errors"] == []
    assert moved["balance"] == 700
    paid = await pay(gql, "alice", 250, 3_000)
    assert paid["payment"]["id"] == "payment1"
    assert paid["payment"]["cashback"] == 5
    assert await balance(gql, "alice") == 450
    assert await balance(gql, "bob") == 300
    await audit()
