"""Live feeds (LIVE.md) against real `bank-graphql serve` processes: `accountEntries` in the
account's order and resumable from a page or an event, delivery across processes, cashback
delivered like any entry, and refusals that end one subscription and not the socket."""

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.live_client import (
    ACCOUNT_FEED,
    LEDGER_FEED,
    PAGE,
    Bank,
    Edge,
    Socket,
    module_server,
    until,
)
from tests.servers import Serve, Server

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def server(
    server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with module_server(server_url, template_db, tmp_path_factory.mktemp("live")) as server:
        yield server


@pytest.fixture
async def bank(server: Server) -> AsyncIterator[Bank]:
    bank = Bank(server)
    yield bank
    await bank.aclose()


async def first_page(bank: Bank, account: str, first: int) -> list[Edge]:
    data = await bank.post(PAGE, {"id": account, "first": first})
    edges: list[Edge] = data["data"]["account"]["transactions"]["edges"]
    return edges


def assert_in_account_order(edges: list[Edge]) -> None:
    stamps = [edge["node"]["timestamp"] for edge in edges]
    assert stamps == sorted(stamps), stamps


async def test_account_entries_resume_from_a_page_then_go_live(server: Server, bank: Bank) -> None:
    await bank.open("page-a", 1_000)
    await bank.open("page-b", 1_000)
    await bank.transfer("page-b", "page-a", 10)
    await bank.transfer("page-a", "page-b", 20)
    await bank.pay("page-a", 300)
    page = await first_page(bank, "page-a", 2)
    assert [edge["node"]["kind"] for edge in page] == ["DEPOSIT", "TRANSFER_IN"]

    sock = await Socket.open(server)
    await sock.subscribe("a", ACCOUNT_FEED, id="page-a", after=page[-1]["cursor"])
    # The entries committed since the page, first: nothing in between is missed.
    await sock.wait_events("a", 2)
    await bank.transfer("page-b", "page-a", 7)
    await bank.deposit("page-a", 3)
    await bank.transfer("page-a", "page-b", 1)
    events = await sock.wait_events("a", 5)
    everything = await bank.transactions("page-a")
    assert events == everything[2:]
    assert [e["node"]["kind"] for e in events] == [
        "TRANSFER_OUT", "PAYMENT", "TRANSFER_IN", "DEPOSIT", "TRANSFER_OUT",
    ]  # fmt: skip
    assert events[1]["node"]["paymentId"] == "payment1"
    assert events[2]["node"]["counterpartyId"] == "page-b"
    assert events[-1]["node"]["balanceAfter"] == 1_000 + 10 - 20 - 300 + 7 + 3 - 1
    assert_in_account_order(events)
    # Nothing repeated: the next event is the next entry.
    marker = await bank.deposit("page-a", 1)
    assert (await sock.wait_events("a", 6))[-1]["node"] == marker
    assert "a" not in sock.ends
    await sock.close()


async def test_account_entries_without_after_start_live(server: Server, bank: Bank) -> None:
    await bank.open("live-a", 100)
    await bank.open("live-b", 100)
    sock = await Socket.open(server)
    await sock.subscribe("a", ACCOUNT_FEED, id="live-a")
    first = await sock.started("a", lambda: bank.deposit("live-a", 1))
    for amount in range(1, 6):
        await bank.transfer("live-b", "live-a", amount)
        await bank.transfer("live-a", "live-b", amount + 1)
    everything = await bank.transactions("live-a")
    # The pokes before the first event committed before the subscription started.
    start = [edge["node"] for edge in everything].index(first["node"])
    events = await sock.wait_events("a", len(everything) - start)
    assert events == everything[start:]
    assert everything[0]["node"]["kind"] == "DEPOSIT"
    assert_in_account_order(events)
    await sock.close()


async def test_account_entries_resume_mid_stream(server: Server, bank: Bank) -> None:
    await bank.open("mid-a", 1_000)
    await bank.open("mid-b", 1_000)
    for amount in range(1, 4):
        await bank.transfer("mid-a", "mid-b", amount)
        await bank.transfer("mid-b", "mid-a", amount * 2)
    page = await first_page(bank, "mid-a", 1)
    sock = await Socket.open(server)
    await sock.subscribe("a", ACCOUNT_FEED, id="mid-a", after=page[0]["cursor"])
    kth = (await sock.wait_events("a", 3))[-1]
    await sock.close()
    for amount in range(1, 3):
        await bank.deposit("mid-a", amount)
        await bank.transfer("mid-b", "mid-a", amount)
    again = await Socket.open(server)
    await again.subscribe("a", ACCOUNT_FEED, id="mid-a", after=kth["cursor"])
    everything = await bank.transactions("mid-a")
    position = [edge["cursor"] for edge in everything].index(kth["cursor"])
    assert position == 3
    rest = await again.wait_events("a", len(everything) - position - 1)
    assert rest == everything[position + 1 :]
    marker = await bank.deposit("mid-a", 9)
    assert (await again.wait_events("a", len(rest) + 1))[-1]["node"] == marker
    await again.close()


async def test_ledger_entries_without_after_start_after_what_committed(
    server: Server, bank: Bank
) -> None:
    await bank.open("since-a", 100)
    await bank.open("since-probe")
    sock = await Socket.open(server)
    earlier: list[Edge] = []
    for n in range(3):
        # Answered, so committed, before the subscription is asked for.
        earlier.append(await bank.deposit("since-a", 1))
        await sock.subscribe(str(n), LEDGER_FEED)
        await sock.started(str(n), lambda: bank.deposit("since-probe", 1))
    later = await bank.deposit("since-a", 1)
    await until(lambda: all(later in nodes(sock, str(n)) for n in range(3)), "the last deposit")
    for n in range(3):
        assert [e for e in earlier if e in nodes(sock, str(n))] == earlier[n + 1 :], n
    await sock.close()


def nodes(sock: Socket, op: str) -> list[Edge]:
    return [edge["node"] for edge in sock.events[op]]


async def test_an_entry_written_through_one_process_reaches_another(
    database_url: str, serve: Serve
) -> None:
    reading, writing = (serve("--database-url", database_url) for _ in range(2))
    bank = Bank(writing)
    await bank.open("far-a", 100)
    await bank.open("far-b", 5)
    [start] = await bank.transactions("far-b")
    sock = await Socket.open(reading)
    await sock.subscribe("b", ACCOUNT_FEED, id="far-b", after=start["cursor"])
    await sock.subscribe("all", LEDGER_FEED)
    await sock.started("all", lambda: bank.deposit("far-a", 1))
    await bank.transfer("far-a", "far-b", 7)
    [incoming] = await sock.wait_events("b", 1)
    assert incoming == (await bank.transactions("far-b"))[-1]
    assert incoming["node"]["kind"] == "TRANSFER_IN"
    outgoing = (await bank.transactions("far-a"))[-1]["node"]
    wanted = [incoming["node"], outgoing]
    await until(lambda: all(n in [e["node"] for e in sock.events["all"]] for n in wanted), "both")
    await sock.close()
    await bank.aclose()


async def test_cashback_is_delivered_like_any_entry(database_url: str, serve: Serve) -> None:
    server = serve("--database-url", database_url, "--clock", "client")
    bank = Bank(server)
    t = 1_000_000
    await bank.open("cb-request", 10_000, ts=t)
    await bank.pay("cb-request", 5_000, ts=t)  # payment1: 100 back at t + 24 h
    await bank.open("cb-sweeper", 10_000, ts=t)
    await bank.pay("cb-sweeper", 1_000, ts=t)  # payment2: 20 back
    await bank.open("cb-clock", ts=t)
    sock = await Socket.open(server)
    for account in ("cb-request", "cb-sweeper"):
        last = (await bank.transactions(account))[-1]
        await sock.subscribe(account, ACCOUNT_FEED, id=account, after=last["cursor"])
    # A write at t + 24 h + 1 credits the cashback before its own entry ...
    await bank.deposit("cb-request", 1, ts=t + DAY_MS + 1)
    cashback, deposit = await sock.wait_events("cb-request", 2)
    assert cashback["node"] == {
        "id": cashback["node"]["id"],
        "accountId": "cb-request",
        "timestamp": t + DAY_MS,
        "kind": "CASHBACK",
        "amount": 100,
        "balanceAfter": 5_100,
        "counterpartyId": None,
        "paymentId": "payment1",
    }
    assert deposit["node"]["kind"] == "DEPOSIT"
    assert deposit["node"]["balanceAfter"] == 5_101
    # ... and once the clock has passed the due time elsewhere, the ledger credits it alone.
    await bank.deposit("cb-clock", 1, ts=t + DAY_MS + 1)
    [swept] = await sock.wait_events("cb-sweeper", 1)
    assert swept == (await bank.transactions("cb-sweeper"))[-1]
    assert (swept["node"]["kind"], swept["node"]["amount"]) == ("CASHBACK", 20)
    assert swept["node"]["paymentId"] == "payment2"
    await sock.close()
    await bank.aclose()


async def test_refusals_end_one_subscription_and_not_the_socket(server: Server, bank: Bank) -> None:
    await bank.open("err-a", 100)
    await bank.open("err-b", 50)
    await bank.merge("err-a", "err-b")
    sock = await Socket.open(server)
    await sock.subscribe("all", LEDGER_FEED)
    ledger_cursor = (await sock.started("all", lambda: bank.deposit("err-a", 1)))["cursor"]
    account_cursor = (await first_page(bank, "err-a", 1))[0]["cursor"]
    cases = {
        "unknown": (ACCOUNT_FEED, {"id": "err-nobody"}, "ACCOUNT_NOT_FOUND"),
        "merged": (ACCOUNT_FEED, {"id": "err-b"}, "ACCOUNT_NOT_FOUND"),
        "garbage": (ACCOUNT_FEED, {"id": "err-a", "after": "not a cursor!"}, "BAD_USER_INPUT"),
        "ledger cursor": (ACCOUNT_FEED, {"id": "err-a", "after": ledger_cursor}, "BAD_USER_INPUT"),
        "account cursor": (LEDGER_FEED, {"after": account_cursor}, "BAD_USER_INPUT"),
        "garbage, ledger": (LEDGER_FEED, {"after": "%%%"}, "BAD_USER_INPUT"),
        "overlong": (ACCOUNT_FEED, {"id": "err-a", "after": "QUFB" * 5_000}, "BAD_USER_INPUT"),
        "overlong, ledger": (LEDGER_FEED, {"after": ledger_cursor * 500}, "BAD_USER_INPUT"),
    }
    for name, (query, variables, code) in cases.items():
        await sock.subscribe(name, query, **variables)
        assert await sock.error_codes(name) == [code], name
        assert sock.events[name] == [], name
    assert sock.closed is None
    # Still usable: a good subscription on the same socket gets its entries.
    await sock.subscribe("good", ACCOUNT_FEED, id="err-a", after=account_cursor)
    everything = await bank.transactions("err-a")
    assert await sock.wait_events("good", len(everything) - 1) == everything[1:]
    assert [e["node"]["kind"] for e in everything[:3]] == ["DEPOSIT", "MERGE_IN", "DEPOSIT"]
    assert "all" not in sock.ends
    await sock.close()
