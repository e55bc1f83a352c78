"""What `serve` prints on a terminal once it answers: where to reach it, which database it
serves, its clock, and the ADMIN key a first start created."""

import http.client
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bank_graphql.ops.access import ADMIN_KEY_CREATED, print_admin_key

MASK = "***"
# A server listening on every address is reached here, and shown, on the loopback one.
_EVERY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104
_CLOCKS = {
    "system": "system: now is this server's clock",
    "client": "client: now is the latest timestamp a mutation used",
}


def masked_url(database_url: str) -> str:
    """The database's URL or conninfo string with its password, if any, replaced by ***."""
    parts = urlsplit(database_url)
    if parts.scheme not in {"postgresql", "postgres"}:
        params = conninfo_to_dict(database_url)
        if "password" in params:
            params["password"] = MASK
        return make_conninfo("", **params)
    netloc = parts.netloc
    if parts.password:
        credentials, _, hosts = netloc.rpartition("@")
        netloc = f"{credentials.partition(':')[0]}:{MASK}@{hosts}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(name == "password" for name, _ in pairs):
        query = urlencode([(n, MASK if n == "password" else v) for n, v in pairs], safe="/*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@dataclass(frozen=True, slots=True)
class Banner:
    host: str
    port: int
    clock: str
    graphiql: bool
    auth: bool
    workers: int
    data_dir: Path | None
    """The embedded PostgreSQL's folder, or None with a database URL."""
    database_url: str | None
    admin_key: str | None
    """Created by this start: shown in the banner, this once."""

    @property
    def base_url(self) -> str:
        host = _EVERY_ADDRESS.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def rows(self) -> list[tuple[str, str]]:
        base = self.base_url
        rows = [("GraphQL", f"{base}/graphql")]
        if self.graphiql:
            rows.append(("GraphiQL", f"{base}/graphql  (in a browser)"))
        rows += [("health", f"{base}/health"), ("metrics", f"{base}/metrics")]
        if self.host in _EVERY_ADDRESS:
            rows.append(("listening", f"on every address ({self.host}), port {self.port}"))
        if self.data_dir is not None:
            rows.append(("data", f"{self.data_dir}  (embedded PostgreSQL)"))
        else:
            rows.append(("database", masked_url(self.database_url or "")))
        rows.append(("clock", _CLOCKS.get(self.clock, self.clock)))
        if self.auth:
            rows.append(("access", "Authorization: Bearer <API key or JWT>"))
        else:
            rows.append(("access", "off (--no-auth): every request is ADMIN"))
        if self.workers > 1:
            rows.append(("workers", str(self.workers)))
        return rows

    def text(self) -> str:
        lines = ["", f"  bank-graphql {version('bank-graphql')} is ready"]
        lines += [f"    {name:<10}{value}" for name, value in self.rows()]
        if self.admin_key is not None:
            lines += ["", f"    {ADMIN_KEY_CREATED}", f"    admin key: {self.admin_key}"]
            if self.graphiql:
                lines.append("    (paste it into the API key field at the top of GraphiQL)")
        lines += ["", "  Ctrl-C stops the server.", ""]
        return "\n".join(lines) + "\n"


class ReadyNotice:
    """The banner, printed once on stderr. When the server stops before it was printed (a port
    already taken, a failed start), the ADMIN key it holds goes to standard output instead:
    a key created is never lost."""

    def __init__(self, banner: Banner) -> None:
        self.banner = banner
        self._lock = threading.Lock()
        self._done = False

    def show(self, port: int) -> None:
        """Print the banner, the server answering on `port`."""
        with self._lock:
            if not self._done:
                self._done = True
                sys.stderr.write(replace(self.banner, port=port).text())
                sys.stderr.flush()

    def close(self) -> None:
        with self._lock:
            if not self._done:
                self._done = True
                if self.banner.admin_key is not None:
                    print_admin_key(self.banner.admin_key)


def when_answering(host: str, port: int, then: Callable[[], None]) -> None:
    """Call `then` once, from a thread of its own, when the server listening at host:port
    answers GET /health with 200 (so with several workers, once the first one is ready)."""
    address = _EVERY_ADDRESS.get(host, host)

    def wait() -> None:
        while not _healthy(address, port):
            time.sleep(0.1)
        then()

    threading.Thread(target=wait, name="ready-notice", daemon=True).start()


def _healthy(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()
