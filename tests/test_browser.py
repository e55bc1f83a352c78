"""The GraphiQL playground in a real browser (Debian's Chromium, headless, driven by
Playwright) against a real server: it renders, runs a query typed into it, shows a
subscription's events, with the key from the key bar, and every request it makes goes to
the server itself. The browser can reach nothing else: names resolve to nothing and any
proxied request goes to a closed port.

Screenshots are kept in $BANK_TEST_ARTIFACTS (default: the test's tmp_path). Without
/usr/bin/chromium these tests skip, unless BANK_REQUIRE_BROWSER=1."""

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browsers import CHROMIUM, local_chromium
from tests.servers import Serve, Server

REQUIRED = os.environ.get("BANK_REQUIRE_BROWSER") == "1"
if not CHROMIUM.exists() and not REQUIRED:
    pytest.skip(
        f"{CHROMIUM} is absent (apt-get install chromium; BANK_REQUIRE_BROWSER=1 makes this fail)",
        allow_module_level=True,
    )
if not REQUIRED:
    pytest.importorskip("playwright", reason="playwright is not installed (the dev extra)")

from playwright.sync_api import (  # noqa: E402
    Browser,
    BrowserContext,
    Page,
    Request,
    expect,
    sync_playwright,
)

QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
RESULT = ".graphiql-response"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"BANK_REQUIRE_BROWSER=1 and {CHROMIUM} is absent"
    with sync_playwright() as playwright:
        browser = local_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def artifacts(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    base = os.environ.get("BANK_TEST_ARTIFACTS")
    folder = Path(base) / re.sub(r"\W+", "_", request.node.name) if base else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Visit:
    """A page on the server, and every URL it asked for (requests and websockets)."""

    page: Page
    server: Server
    urls: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)

    def assert_only_the_server(self) -> None:
        assert self.urls
        for url in self.urls:
            parts = urlsplit(url)
            assert parts.scheme in {"http", "ws"}, url
            assert parts.netloc == f"127.0.0.1:{self.server.port}", url


@pytest.fixture
def visit(browser: Browser, artifacts: Path) -> Iterator[Callable[[Server], Visit]]:
    contexts: list[BrowserContext] = []
    visits: list[Visit] = []

    def open_page(server: Server) -> Visit:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        contexts.append(context)
        page = context.new_page()
        seen = Visit(page, server)
        visits.append(seen)

        def record(request: Request) -> None:
            seen.urls.append(request.url)
            if request.method == "POST":
                seen.authorizations.append(request.headers.get("authorization"))

        page.on("request", record)
        page.on("websocket", lambda ws: seen.urls.append(ws.url))
        page.goto(f"{server.base}/graphql")
        expect(page.locator(QUERY_EDITOR)).to_be_visible(timeout=WAIT_MS)
        return seen

    yield open_page
    for number, seen in enumerate(visits):
        seen.page.screenshot(path=str(artifacts / f"page-{number}.png"))
    for context in contexts:
        context.close()


def post(server: Server, query: str, key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(f"{server.base}/graphql", json={"query": query}, headers=headers)
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


def open_and_fund(server: Server, account: str, amount: int, key: str | None = None) -> None:
    body = post(
        server,
        f'mutation {{ createAccount(input: {{id: "{account}"}}) {{ errors {{ code }} }}'
        f' deposit(input: {{accountId: "{account}", amount: {amount}}}) {{ errors {{ code }} }} }}',
        key,
    )
    assert body["data"] == {"createAccount": {"errors": []}, "deposit": {"errors": []}}


def give_key(page: Page, key: str) -> None:
    """The key into the bar, as a user pastes it and presses Enter."""
    page.locator("#bank-api-key").fill(key)
    page.locator("#bank-api-key").press("Enter")
    expect(page.locator("#bank-key-state")).to_have_text("sent as Authorization: Bearer")


def run_in_editor(page: Page, name: str, document: str) -> None:
    """Type `document` (an operation called `name`) into a new tab of the editor, as a paste
    would, and run it with Ctrl+Enter once GraphiQL has read it (the tab takes its name)."""
    page.get_by_label("Add tab").click()
    page.locator(QUERY_EDITOR).click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(document)
    expect(page.locator(".graphiql-tab-active .graphiql-tab-button")).to_have_text(
        name, timeout=WAIT_MS
    )
    page.keyboard.press("Control+Enter")


# --- the cases -------------------------------------------------------------------------------


def test_the_page_renders_with_its_example(
    serve: Serve, database_url: str, visit: Callable[[Server], Visit]
) -> None:
    seen = visit(serve("--database-url", database_url))
    page = seen.page
    expect(page.locator("#bank-api-key")).to_be_visible()
    expect(page.locator(QUERY_EDITOR)).to_contain_text("query Accounts")
    expect(page.locator(QUERY_EDITOR)).to_contain_text("mutation Open")
    # The schema came (over HTTP, from the server): the documentation explorer can show it.
    page.get_by_label("Show Documentation Explorer").click()
    expect(page.locator(".graphiql-doc-explorer")).to_contain_text("Mutation", timeout=WAIT_MS)
    page.get_by_label("Show GraphiQL Explorer").click()
    expect(page.locator(".graphiql-explorer-root")).to_contain_text("topSpenders")
    assert any(u.endswith("/graphql/assets/graphiql-3.8.3.min.js") for u in seen.urls)
    seen.assert_only_the_server()


def test_a_query_typed_with_the_key_from_the_bar_runs(
    serve: Serve, database_url: str, visit: Callable[[Server], Visit]
) -> None:
    server = serve("--database-url", database_url, auth=True)
    key = server.admin_key
    open_and_fund(server, "alice", 1234, key)
    seen = visit(server)
    page = seen.page
    give_key(page, key)
    # With the key, the schema comes: the page fetched it again when the key was given.
    page.get_by_label("Show Documentation Explorer").click()
    expect(page.locator(".graphiql-doc-explorer")).to_contain_text("Mutation", timeout=WAIT_MS)
    run_in_editor(page, "Look", 'query Look { account(id: "alice") { id balance } }')
    expect(page.locator(RESULT)).to_contain_text('"balance": 1234', timeout=WAIT_MS)
    assert f"Bearer {key}" in seen.authorizations
    seen.assert_only_the_server()


def test_a_subscription_shows_a_transfer_made_over_http(
    serve: Serve, database_url: str, visit: Callable[[Server], Visit]
) -> None:
    server = serve("--database-url", database_url, auth=True)
    key = server.admin_key
    open_and_fund(server, "alice", 10_000, key)
    open_and_fund(server, "bob", 1, key)
    seen = visit(server)
    page = seen.page
    give_key(page, key)  # sent in the websocket's connection_init
    subscribed: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: subscribed.append(frame)))
    run_in_editor(page, "Watch", "subscription Watch { ledgerEntries { node { id kind amount } } }")
    transfer = (
        'mutation { transfer(input: {sourceAccountId: "alice", targetAccountId: "bob",'
        " amount: 25}) { errors { code } } }"
    )
    deadline = time.monotonic() + WAIT_MS / 1000
    while not any('"subscribe"' in str(frame) for frame in subscribed):
        assert time.monotonic() < deadline, f"no subscribe frame: {subscribed}"
        page.wait_for_timeout(100)
    inits = [str(f) for f in subscribed if '"connection_init"' in str(f)]
    assert inits, subscribed
    assert all(f"Bearer {key}" in init for init in inits), inits
    # The subscription starts on the server a moment after its frame: until an event (or an
    # error) shows, each new transfer is another chance (entries before the start are not sent).
    shown = re.compile(r'TRANSFER_|"errors"')
    for _ in range(20):
        post(server, transfer, key)
        try:
            expect(page.locator(RESULT)).to_contain_text(shown, timeout=1500)
            break
        except AssertionError:
            continue
    expect(page.locator(RESULT)).not_to_contain_text('"errors"')
    expect(page.locator(RESULT)).to_contain_text('"amount": 25')
    assert any(u.startswith(f"ws://127.0.0.1:{server.port}/graphql") for u in seen.urls)
    seen.assert_only_the_server()
