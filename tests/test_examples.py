"""The examples of examples/, run as their users run them against a real server:
bulk_transfers.py as a subprocess (directly, and through a proxy that fails on purpose), and
the frontend page in headless Chromium (Debian's, as tests/test_browser.py drives it; without
/usr/bin/chromium that test skips, unless BANK_REQUIRE_BROWSER=1).

All tests share one server (each its own account ids) whose CORS allows the origin of a tiny
http.server holding examples/frontend/."""

import asyncio
import json
import os
import re
import runpy
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bank_graphql.ledger import Role
from tests.browsers import CHROMIUM, local_chromium
from tests.conftest import cloned_database, issue_key
from tests.servers import Server, free_port, running

ROOT = Path(__file__).resolve().parent.parent
BULK = ROOT / "examples" / "bulk_transfers.py"
FRONTEND = ROOT / "examples" / "frontend"


@dataclass(frozen=True)
class Bank:
    server: Server
    site: str  # where the frontend's files are served
    reader_key: str

    @property
    def url(self) -> str:
        return f"{self.server.base}/graphql"

    def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            self.url,
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.server.admin_key}"},
            timeout=30,
        )
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    def open(self, **balances: int) -> None:
        for account, amount in balances.items():
            data = self.post(
                "mutation($id: ID!) { createAccount(input: {id: $id}) { errors { code } } }",
                {"id": account},
            )
            assert data["createAccount"]["errors"] == []
            if amount:
                data = self.post(
                    "mutation($id: ID!, $n: Money!) {"
                    " deposit(input: {accountId: $id, amount: $n}) { errors { code } } }",
                    {"id": account, "n": amount},
                )
                assert data["deposit"]["errors"] == []

    def transfer(self, source: str, target: str, amount: int) -> str:
        data = self.post(
            "mutation($s: ID!, $t: ID!, $n: Money!) { transfer(input: {sourceAccountId: $s,"
            " targetAccountId: $t, amount: $n}) { entry { id } errors { code } } }",
            {"s": source, "t": target, "n": amount},
        )
        assert data["transfer"]["errors"] == []
        entry_id: str = data["transfer"]["entry"]["id"]
        return entry_id

    def balances(self, *accounts: str) -> dict[str, int]:
        aliases = " ".join(
            f'a{i}: account(id: "{a}") {{ balance }}' for i, a in enumerate(accounts)
        )
        data = self.post(f"{{ {aliases} }}")
        return {a: data[f"a{i}"]["balance"] for i, a in enumerate(accounts)}

    def entry_ids(self, account: str) -> list[str]:
        data = self.post(
            "query($id: ID!) { account(id: $id) { transactions(first: 100) { nodes { id } } } }",
            {"id": account},
        )
        return [node["id"] for node in data["account"]["transactions"]["nodes"]]


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def bank(
    server_url: str, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bank]:
    files = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietFiles, directory=str(FRONTEND)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    site = f"http://127.0.0.1:{files.server_port}"
    log = tmp_path_factory.mktemp("examples") / "server.log"
    try:
        with (
            cloned_database(server_url, template_db, "bank_examples") as url,
            running("--database-url", url, "--cors-origins", site, log=log, auth=True) as server,
        ):
            yield Bank(server, site, asyncio.run(issue_key(url, Role.READER)))
    finally:
        files.shutdown()
        files.server_close()


def bulk(
    url: str, csv: Path, *args: str, key: str, key_in_env: bool = False
) -> subprocess.CompletedProcess[str]:
    """examples/bulk_transfers.py as a user runs it: the key in --key, or in BANK_API_KEY."""
    env = {k: v for k, v in os.environ.items() if k != "BANK_API_KEY"}
    if key_in_env:
        env["BANK_API_KEY"] = key
    options = [] if key_in_env else ["--key", key]
    return subprocess.run(
        [sys.executable, str(BULK), "--url", url, *options, *args, str(csv)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def summary(run: subprocess.CompletedProcess[str]) -> str:
    found: list[str] = re.findall(r"^summary: (.*)$", run.stdout, re.M)
    assert len(found) == 1, (run.stdout, run.stderr)
    return found[0]


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["from_account,to_account,amount,reference", *rows]) + "\n")
    return path


@dataclass
class FlakyProxy:
    """An HTTP proxy in front of the server that fails on purpose: request n takes plan[n]
    ("forward" once the plan is used up). "503" and "busy" (a GraphQL error DATABASE_BUSY)
    answer without forwarding, "close" closes the connection without forwarding, "lost"
    forwards and then closes without answering."""

    target: str
    plan: list[str]
    seen: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def __post_init__(self) -> None:
        self.port = free_port()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers["Content-Length"]))
        action = self.plan[len(self.seen)] if len(self.seen) < len(self.plan) else "forward"
        self.seen.append(action)
        if action == "close":
            request.close_connection = True
            return
        if action in {"503", "busy"}:
            status, content = (
                (503, b"Service Unavailable")
                if action == "503"
                else (200, _error_body("DATABASE_BUSY", "the database is busy"))
            )
        else:
            forwarded = httpx.post(
                self.target,
                content=body,
                headers={
                    "Content-Type": request.headers["Content-Type"],
                    "Authorization": request.headers["Authorization"],
                },
                timeout=30,
            )
            if action == "lost":  # it ran; its answer never reaches the client
                request.close_connection = True
                return
            status, content = forwarded.status_code, forwarded.content
        request.send_response(status)
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        request.wfile.write(content)


def _error_body(code: str, message: str) -> bytes:
    return json.dumps(
        {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}
    ).encode()


@pytest.fixture
def proxy(bank: Bank) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(bank.url, [])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            flaky.handle(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    listener = ThreadingHTTPServer(("127.0.0.1", flaky.port), Handler)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    yield flaky
    listener.shutdown()
    listener.server_close()


# -- bulk_transfers.py --------------------------------------------------------------------------


def test_bulk_transfers_refuse_what_cannot_go_and_a_second_run_applies_nothing_twice(
    bank: Bank, tmp_path: Path
) -> None:
    bank.open(**{"b1-alice": 1000, "b1-bob": 0})
    csv = write_csv(
        tmp_path / "transfers.csv",
        [
            "b1-alice,b1-bob,100,rent-1",
            "b1-alice,b1-bob,250,rent-2",
            "b1-alice,b1-nobody,50,rent-3",  # no such account
            "b1-bob,b1-alice,5000,rent-4",  # more than b1-bob holds
            "b1-bob,b1-alice,50,rent-5",
        ],
    )
    after = {"b1-alice": 1000 - 100 - 250 + 50, "b1-bob": 100 + 250 - 50}

    first = bulk(bank.url, csv, "--chunk-size", "2", key=bank.server.admin_key)
    assert first.returncode == 1, first
    assert summary(first) == "3 applied, 2 refused, 0 unfinished; 3 chunks, 0 replayed"
    assert "refused: line 4 [rent-3] b1-alice -> b1-nobody 50: ACCOUNT_NOT_FOUND" in first.stdout
    assert "refused: line 5 [rent-4] b1-bob -> b1-alice 5000: INSUFFICIENT_FUNDS" in first.stdout
    assert bank.balances(*after) == after

    # The same file again, as after a crash (the key from BANK_API_KEY this time): every chunk
    # answers what it answered, refusals included, and nothing moves.
    second = bulk(bank.url, csv, "--chunk-size", "2", key=bank.server.admin_key, key_in_env=True)
    assert second.returncode == 1, second
    assert summary(second) == "3 applied, 2 refused, 0 unfinished; 3 chunks, 3 replayed"
    assert second.stdout.count("by an earlier run (replayed") == 3
    assert "refused: line 5 [rent-4] b1-bob -> b1-alice 5000: INSUFFICIENT_FUNDS" in second.stdout
    assert bank.balances(*after) == after

    # Keys are the rows', not the chunks': cut into other chunks, nothing is applied twice.
    third = bulk(bank.url, csv, "--chunk-size", "4", key=bank.server.admin_key)
    assert summary(third).startswith("3 applied, 2 refused, 0 unfinished; 2 chunks"), third
    assert bank.balances(*after) == after


def test_a_bad_amount_is_reported_and_nothing_of_the_file_is_sent(
    bank: Bank, proxy: FlakyProxy, tmp_path: Path
) -> None:
    csv = write_csv(
        tmp_path / "transfers.csv",
        [
            "b2-alice,b2-bob,100,fine",
            "b2-alice,b2-bob,12.50,cents-as-a-float",
            "b2-alice,b2-bob,1e3,exponent",
            "b2-alice,b2-bob,,empty",
            "b2-alice,,5,no-target",
        ],
    )
    run = bulk(proxy.url, csv, key=bank.server.admin_key)
    assert run.returncode == 2, run
    assert proxy.seen == []
    assert run.stdout == ""
    assert "nothing sent" in run.stderr
    assert "line 3: amount '12.50' is not a whole number of minor units" in run.stderr
    assert "line 4: amount '1e3'" in run.stderr
    assert "line 5: amount ''" in run.stderr
    assert "line 6: from_account and to_account are required" in run.stderr
    assert "line 2" not in run.stderr


def test_what_can_be_retried_is_retried_and_applied_once(
    bank: Bank, proxy: FlakyProxy, tmp_path: Path
) -> None:
    bank.open(**{"b3-alice": 1000, "b3-bob": 0})
    csv = write_csv(tmp_path / "t.csv", ["b3-alice,b3-bob,100,a", "b3-alice,b3-bob,200,b"])
    proxy.plan = ["503", "busy", "lost"]
    run = bulk(proxy.url, csv, key=bank.server.admin_key)
    assert run.returncode == 0, run
    assert proxy.seen == ["503", "busy", "lost", "forward"]
    # The lost answer's request had run: sent again, it was answered from its keys.
    assert summary(run) == "2 applied, 0 refused, 0 unfinished; 1 chunks, 0 replayed"
    assert bank.balances("b3-alice", "b3-bob") == {"b3-alice": 700, "b3-bob": 300}


def test_a_refusal_no_retry_can_change_is_shown_at_once(
    bank: Bank, proxy: FlakyProxy, tmp_path: Path
) -> None:
    csv = write_csv(tmp_path / "t.csv", ["b4-alice,b4-bob,100,a"])
    run = bulk(proxy.url, csv, key="bgk_not_a_key")
    assert run.returncode == 1, run
    assert proxy.seen == ["forward"]
    assert "refused (HTTP 401): UNAUTHENTICATED" in run.stderr
    assert summary(run) == "0 applied, 0 refused, 1 unfinished; 0 chunks, 0 replayed"


def test_a_run_cut_short_is_finished_by_running_the_file_again(
    bank: Bank, proxy: FlakyProxy, tmp_path: Path
) -> None:
    bank.open(**{"b5-alice": 1000, "b5-bob": 0})
    rows = [f"b5-alice,b5-bob,{n},row-{n}" for n in (1, 2, 4, 8, 16, 32)]
    csv = write_csv(tmp_path / "t.csv", rows)
    # Chunk 1 goes through; chunk 2 is never taken, then runs but its answer is lost; the
    # script gives up there (2 attempts), not knowing chunk 2's outcome; chunk 3 is not sent.
    proxy.plan = ["forward", "close", "lost"]
    cut = bulk(proxy.url, csv, "--chunk-size", "2", "--attempts", "2", key=bank.server.admin_key)
    assert cut.returncode == 1, cut
    assert "chunk 2/3, lines 4-5: not confirmed after 2 attempts" in cut.stderr
    assert summary(cut) == "2 applied, 0 refused, 4 unfinished; 1 chunks, 0 replayed"
    assert bank.balances("b5-alice", "b5-bob") == {"b5-alice": 1000 - 15, "b5-bob": 15}

    again = bulk(bank.url, csv, "--chunk-size", "2", key=bank.server.admin_key)
    assert again.returncode == 0, again
    assert summary(again) == "6 applied, 0 refused, 0 unfinished; 3 chunks, 2 replayed"
    assert bank.balances("b5-alice", "b5-bob") == {"b5-alice": 1000 - 63, "b5-bob": 63}


def test_the_readme_retry_example_and_the_script_retry_on_the_same_answers() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("A script that retries safely") :]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)[:1]
    readme: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), readme)
    script = runpy.run_path(str(BULK))
    assert readme["RETRYABLE"] == script["RETRYABLE_CODES"]
    assert readme["RETRY_STATUSES"] == script["RETRYABLE_STATUSES"]


# -- the frontend -------------------------------------------------------------------------------

REQUIRE_BROWSER = os.environ.get("BANK_REQUIRE_BROWSER") == "1"
WAIT_MS = 20_000


def test_the_frontend_shows_history_then_live_entries_each_once(bank: Bank, tmp_path: Path) -> None:
    if not REQUIRE_BROWSER:
        if not CHROMIUM.exists():
            pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
        pytest.importorskip("playwright", reason="playwright is not installed (the dev extra)")
    from playwright.sync_api import Route, expect, sync_playwright

    bank.open(**{"f-alice": 10_000, "f-bob": 1})
    bank.transfer("f-alice", "f-bob", 1_250)  # history: the deposit and this transfer
    between: list[str] = []
    read: list[dict[str, Any]] = []  # the history the page read

    def hold_the_page(route: Route) -> None:
        """Let the page's history read reach the server, then move money before the browser
        gets the answer: that entry is not in the history read, only after its last cursor."""
        if route.request.method != "POST" or between:
            route.continue_()
            return
        answer = route.fetch()
        between.append(bank.transfer("f-alice", "f-bob", 300))
        route.fulfill(response=answer)
        read.extend(answer.json()["data"]["account"]["transactions"]["edges"])

    with sync_playwright() as playwright:
        browser = local_chromium(playwright)
        page = browser.new_page()
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        page.on("websocket", lambda socket: urls.append(socket.url))
        page.route(bank.url, hold_the_page)
        page.goto(f"{bank.site}/index.html")
        page.fill("#url", bank.url)
        page.fill("#key", bank.reader_key)
        page.fill("#account", "f-alice")
        page.click("text=Show")
        rows = page.locator("#entries tr")
        status = page.locator("#status")
        expect(status).not_to_have_text(re.compile(r"^(reading history)?$"), timeout=WAIT_MS)
        assert status.text_content() == "live"  # and not "connection lost, reconnecting"
        expect(rows).to_have_count(3, timeout=WAIT_MS)  # the page, then the one in between
        assert [edge["node"]["kind"] for edge in read] == ["DEPOSIT", "TRANSFER_OUT"]

        last = bank.transfer("f-alice", "f-bob", 25)  # made over HTTP, shown live
        expect(rows).to_have_count(4, timeout=WAIT_MS)
        shown = [rows.nth(i).get_attribute("data-entry-id") for i in range(4)]
        assert shown == bank.entry_ids("f-alice")
        assert shown[2:] == [between[0], last]
        expect(page.locator("#balance")).to_have_text("84.25")  # 10_000 - 1_250 - 300 - 25
        expect(rows.nth(3)).to_contain_text("-0.25")
        artifacts = Path(os.environ.get("BANK_TEST_ARTIFACTS") or tmp_path)
        artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artifacts / "examples-frontend.png"))
        browser.close()
    served = {urlsplit(bank.site).netloc, urlsplit(bank.server.base).netloc}
    assert {urlsplit(url).netloc for url in urls} <= served, urls
