"""A worker's memory stays bounded under large documents that never parse: their garbage
(the parser's tokens point at each other) is collected as it comes."""

from pathlib import Path

import httpx

from tests.servers import Serve

REQUESTS = 150
QUERY_BYTES = 900_000  # under the default body limit of 1 MiB


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_large_documents_that_do_not_parse_leave_no_heap_behind(
    serve: Serve, database_url: str
) -> None:
    server = serve("--database-url", database_url)
    query = "#" + "x" * QUERY_BYTES + "\n{ ("
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        assert (await http.post("/graphql", json={"query": "{ __typename }"})).status_code == 200
        sizes = []
        for _ in range(3):
            for _ in range(REQUESTS):
                response = await http.post("/graphql", json={"query": query})
                error = response.json()["errors"][0]
                assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
            sizes.append(rss_bytes(server.process.pid))
    # The first round may leave the allocator holding what it freed; later rounds reuse it.
    # Kept, each round of 150 requests of 0.9 MB would add 135 MB and more.
    grown = sizes[-1] - sizes[0]
    assert grown < 40 * 2**20, f"the server grew by {grown / 2**20:.0f} MiB: {sizes}"
