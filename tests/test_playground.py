"""The GraphiQL playground over HTTP: a page that needs nothing from outside, its pinned
files served by name only, a ready example that runs, `--no-graphiql` serving none of it,
and the build step refusing a tarball that is not the one pinned."""

import re
import tarfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import graphql
import pytest

from bank_graphql.api.schema import schema
from bank_graphql.edge.playground import page, pins
from tests.conftest import GraphQLClient, MakeClient
from tests.test_http import assert_no_stack_trace

HTML = {"Accept": "text/html"}
PAGE_URL = "http://test/graphql"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


class _References(HTMLParser):
    """Every URL the page makes the browser load: script src, link href, img src..."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "action", "srcset", "poster", "data"} and value:
                self.urls.append(value)


def references(page_text: str) -> list[str]:
    parser = _References()
    parser.feed(page_text)
    return parser.urls


async def the_page(gql: GraphQLClient) -> str:
    response = await gql.http.get("/graphql", headers=HTML)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


async def test_the_page_references_nothing_outside_the_server(gql: GraphQLClient) -> None:
    text = await the_page(gql)
    assert "http://" not in text
    assert "https://" not in text
    urls = references(text)
    assert len([u for u in urls if not u.startswith("data:")]) == 6, urls
    for url in urls:
        if url.startswith("data:"):
            continue
        absolute = urlsplit(urljoin(PAGE_URL, url))
        assert (absolute.scheme, absolute.netloc) == ("http", "test"), url
        assert absolute.path.startswith("/graphql/assets/"), url


async def test_every_file_the_page_references_is_served(gql: GraphQLClient) -> None:
    served = set()
    for url in references(await the_page(gql)):
        if url.startswith("data:"):
            continue
        response = await gql.http.get(urljoin(PAGE_URL, url))
        assert response.status_code == 200, url
        name = url.rsplit("/", 1)[-1]
        assert response.headers["content-type"].startswith(CONTENT_TYPES[Path(name).suffix])
        assert "immutable" in response.headers["cache-control"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == (pins.STATIC / name).read_bytes()
        served.add(name)
        if name.endswith(".css"):
            # Fonts and images come inlined (data:), never from another host.
            assert set(re.findall(r"url\(\s*['\"]?([a-z]+):", response.text)) <= {"data"}
            assert "@import" not in response.text
    assert served == {n for n in pins.ASSETS if not n.endswith(".txt")}


async def test_the_licenses_are_served_as_text(gql: GraphQLClient) -> None:
    for name in sorted(n for n in pins.ASSETS if n.endswith(".txt")):
        response = await gql.http.get(f"/graphql/assets/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith("text/plain")
        assert "Permission is hereby granted" in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/graphql/assets/nope.js",
        "/graphql/assets/PINNED",  # in the folder, but not an asset
        "/graphql/assets/..%2Fpins.py",
        "/graphql/assets/%2E%2E%2Fpage.py",
        "/graphql/assets/..%2F..%2F..%2Fpyproject.toml",
        "/graphql/assets/",
        "/graphql/assets",
        "/graphql/assets/react-18.3.1.min.js/x",
        "/graphql/assets/REACT-18.3.1.MIN.JS",
    ],
)
async def test_only_pinned_names_are_served(gql: GraphQLClient, path: str) -> None:
    assert (pins.STATIC / "PINNED").is_file()
    response = await gql.http.get(path)
    assert response.status_code == 404, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert_no_stack_trace(response)


async def test_assets_are_read_only(gql: GraphQLClient) -> None:
    response = await gql.http.post("/graphql/assets/react-18.3.1.min.js", content=b"x")
    assert response.status_code == 405
    head = await gql.http.head("/graphql/assets/react-18.3.1.min.js")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) > 0


async def test_without_graphiql_neither_the_page_nor_its_files(make_client: MakeClient) -> None:
    client = await make_client(graphiql=False)
    assert (await client.http.get("/graphql", headers=HTML)).status_code == 404
    for name in sorted(pins.ASSETS):
        response = await client.http.get(f"/graphql/assets/{name}")
        assert response.status_code == 404, name
        assert "graphiql" not in response.text.lower()


async def test_files_missing_from_the_install_get_a_page_that_says_so(
    gql: GraphQLClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pins, "STATIC", tmp_path)
    response = await gql.http.get("/graphql", headers=HTML)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "not installed" in response.text
    assert "graphiql-3.8.3.min.js" in response.text
    assert pins.TARBALLS_ENV in response.text
    assert_no_stack_trace(response)
    assert (await gql.http.get("/graphql/assets/react-18.3.1.min.js")).status_code == 404
    # The API itself answers.
    assert await gql.ok("{ __typename }") == {"__typename": "Query"}


# --- the example the page opens with ---------------------------------------------------------


async def test_the_example_runs_operation_by_operation(gql: GraphQLClient) -> None:
    async def run(name: str) -> dict[str, object]:
        response = await gql.http.post(
            "/graphql", json={"query": page.DEFAULT_DOCUMENT, "operationName": name}
        )
        body: dict[str, object] = response.json()
        assert "errors" not in body, body
        return body

    assert await run("Accounts") == {
        "data": {"accounts": {"nodes": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}}
    }
    opened = str(await run("Open"))
    moved = await run("Move")
    assert "'errors': [{" not in opened + str(moved), (opened, moved)
    assert "TRANSFER_OUT" in str(moved)
    accounts = str(await run("Accounts"))
    assert "'id': 'alice', 'balance': 7500" in accounts
    assert "'id': 'bob', 'balance': 2500" in accounts


def test_the_commented_subscription_is_valid_once_uncommented() -> None:
    commented = page.DEFAULT_DOCUMENT.split("# subscription", 1)[1]
    document = "subscription" + re.sub(r"(?m)^# ?", "", commented)
    assert "ledgerEntries" in document
    errors = graphql.validate(graphql.build_schema(schema.as_str()), graphql.parse(document))
    assert errors == [], errors


# --- the build step ----------------------------------------------------------------------------


def _tarball(folder: Path, pin: pins.Pin, content: bytes) -> None:
    member = folder / "member"
    member.write_bytes(content)
    with tarfile.open(folder / pin.tarball_url.rsplit("/", 1)[-1], "w:gz") as archive:
        for name in pin.files:
            archive.add(member, arcname=name)


def test_the_build_step_refuses_a_tarball_that_is_not_the_pinned_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarballs = tmp_path / "tarballs"
    tarballs.mkdir()
    for pin in pins.PINS:
        _tarball(tarballs, pin, b"window.evil = true;")
    monkeypatch.setenv(pins.TARBALLS_ENV, str(tarballs))
    folder = tmp_path / "static"
    with pytest.raises(pins.PlaygroundFetchError, match="integrity") as refused:
        pins.fetch_assets(folder)
    assert pins.PINS[0].integrity in str(refused.value)
    assert not any(b"evil" in p.read_bytes() for p in folder.iterdir())
    assert pins.missing(folder) == sorted(pins.ASSETS)


def test_the_build_step_says_how_to_build_without_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pins.TARBALLS_ENV, str(tmp_path / "absent"))
    with pytest.raises(pins.PlaygroundFetchError, match=pins.TARBALLS_ENV):
        pins.fetch_assets(tmp_path / "static")
