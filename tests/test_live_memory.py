"""A subscription's events leave nothing behind: the server's memory does not grow with
the number of events a long-lived subscription has received (graphql-core keeps each
event's collected fields in a cache shared by every event of a subscription unless the
server gives each event its own)."""

from collections.abc import Iterator

import pytest

from tests.live_client import LEDGER_FEED, Bank, Socket, module_server, until
from tests.servers import Server
from tests.test_http_exhaustion import _rss_kib

BATCH = [("m-a", "m-b", 1), ("m-b", "m-a", 1)] * 250  # 1,000 entries a request
ROUND = 10  # requests: 10,000 events a round
GROWTH_KIB_MAX = 12 * 1024  # a leak of ~2 KiB an event grows a round by 20 MB or more


@pytest.fixture(scope="module")
def server(
    server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with module_server(server_url, template_db, tmp_path_factory.mktemp("mem")) as server:
        yield server


async def test_a_long_subscription_does_not_grow_the_server(server: Server) -> None:
    bank = Bank(server)
    for account in ("m-a", "m-b"):
        await bank.open(account, 10**9)
    reader = await Socket.open(server)
    await reader.subscribe("all", LEDGER_FEED)
    await reader.started("all", lambda: bank.deposit("m-a", 1))

    async def round_of_events() -> int:
        expected = len(reader.events["all"]) + ROUND * len(BATCH)
        for _ in range(ROUND):
            await bank.batch(BATCH)
        await until(lambda: len(reader.events["all"]) >= expected, "the round's events", 120)
        assert "all" not in reader.ends, reader.ends["all"]
        return _rss_kib(server.process.pid)

    await round_of_events()  # warm-up: caches, allocator arenas
    first = await round_of_events()
    second = await round_of_events()
    assert second - first < GROWTH_KIB_MAX, (first, second)
    await reader.close()
    await bank.aclose()
