"""examples/bulk_transfers.py against hostile input: a file the csv module cannot read and a
server at --url that answers JSON that is not this API's. Each ends in a sentence and an
exit status, never a traceback."""

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.test_examples import BULK, write_csv

NOT_THIS_API = [
    b"null",
    b"[]",
    b'{"data": {}}',
    b'{"data": {"transferBatch": null}}',
    b'{"data": {"transferBatch": {"errors": [], "results": []}}}',
    b'{"errors": ["boom"]}',
    b'{"errors": [{"message": "boom", "extensions": null}]}',
]


class _Answers(BaseHTTPRequestHandler):
    """Answers POST /N with NOT_THIS_API[N], status 200."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = NOT_THIS_API[int(self.path.strip("/"))]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def bulk(url: str, csv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BULK), "--url", url, "--key", "k", "--attempts", "1", str(csv)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("answer", range(len(NOT_THIS_API)))
def test_an_answer_that_is_not_this_apis_stops_the_run_in_a_sentence(
    elsewhere: str, tmp_path: Path, answer: int
) -> None:
    run = bulk(f"{elsewhere}/{answer}", write_csv(tmp_path / "t.csv", ["a,b,5,rent"]))
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 1
    assert "stopped: later chunks were not sent" in run.stderr
    assert "summary: 0 applied, 0 refused, 1 unfinished" in run.stdout


def test_a_field_larger_than_csv_reads_is_bad_input(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "t.csv", ["a,b,5,rent", "a,b,5," + "x" * 200_000])
    run = bulk("http://127.0.0.1:9/graphql", csv)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"{csv}: the row after line 2: field larger than field limit (131072)"
    )
