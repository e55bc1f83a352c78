"""Send the transfers of a CSV file through `transferBatch`, safe to run again.

    python examples/bulk_transfers.py --url http://127.0.0.1:8000/graphql --key KEY transfers.csv

The key may come from BANK_API_KEY instead of --key. The file's first row names its columns:
from_account, to_account, amount and, optionally, reference (other columns are ignored).
An amount is a whole number of minor units: 1250 for 12.50, never 12.50. Every row is
checked before anything is sent, and a file with a bad row is refused whole: so fixing the
file can never change what an earlier run of it sent.

Running it again, after a crash, a lost connection or a refusal, applies nothing twice. Each
row is sent with an idempotency key made from the file's bytes and the row's line, so the
server applies each row once and answers a row it already holds with what it answered the
first time, refusals included. The same file is the same intent: to send the same transfers
again, give them new references. Keys belong to the credential and the server keeps them at
least 7 days: run it again with the same key, within that time.

Rows go in chunks of --chunk-size, one request each. A request is sent again only while the
answer says the database could not take it or the answer was lost on the way (see
`post_until_final`); anything else is final and shown. The summary counts rows applied, rows
refused (with the reasons) and chunks replayed (sent by an earlier run of this file).

Exit status: 0 every row applied, 1 some rows refused or unfinished, 2 bad input or usage.
Only the standard library is needed.
"""

import argparse
import csv
import hashlib
import http.client
import io
import json
import os
import random
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

# The retry rule of the README ("A script that retries safely"): its Python example holds
# the same two sets, as RETRYABLE and RETRY_STATUSES (tests/test_examples.py checks).
RETRYABLE_CODES = {"DATABASE_UNAVAILABLE", "DATABASE_BUSY"}
RETRYABLE_STATUSES = {408, 429, 502, 503, 504}

COLUMNS = ("from_account", "to_account", "amount")
MONEY_MAX = 2**53 - 1
BATCH_MAX = 1000  # the server's limit, one item of which is the chunk's receipt
REQUEST_TIMEOUT_S = 60

TRANSFER_BATCH = """
mutation BulkTransfers($transfers: [TransferInput!]!) {
  transferBatch(input: {transfers: $transfers}) {
    errors { code message }
    results { errors { code message } }
  }
}"""


class BadInput(Exception):
    """The command line or the file is wrong: nothing was sent."""


class NotSent(Exception):
    """The server refused a request itself, or never confirmed it: see the message."""


@dataclass(frozen=True)
class Row:
    line: int
    source: str
    target: str
    amount: int
    reference: str

    def __str__(self) -> str:
        named = f" [{self.reference}]" if self.reference else ""
        return f"line {self.line}{named} {self.source} -> {self.target} {self.amount}"


@dataclass
class Tally:
    applied: int = 0
    refused: list[tuple[Row, str]] = field(default_factory=list)
    unfinished: int = 0  # rows of chunks the server refused whole or never confirmed
    chunks: int = 0
    replayed: int = 0


@dataclass(frozen=True)
class Keys:
    """Idempotency keys: a row's from the file's fingerprint and its line (so a re-run with
    another --chunk-size applies nothing twice either), a chunk's from its lines.

    The server answers a row it holds exactly as the first time, so the answer cannot say
    whether this run applied it. Each chunk therefore ends with a receipt: a transfer of 0,
    refused (it moves nothing) and stored under the chunk's key in the same transaction as
    the chunk's rows. It names this run (as its target, a name no account needs to have): a
    later run sends its own name under that key, and the server answers
    IDEMPOTENCY_KEY_REUSED: the chunk had been sent before."""

    file: str
    run: str = field(default_factory=lambda: f"run-{secrets.token_hex(8)}")

    def row(self, row: Row) -> str:
        return f"bulk:{self.file}:line:{row.line}"

    def receipt(self, chunk: list[Row]) -> dict[str, Any]:
        return {
            "sourceAccountId": chunk[0].source,
            "targetAccountId": self.run,
            "amount": 0,
            "idempotencyKey": f"bulk:{self.file}:lines:{chunk[0].line}-{chunk[-1].line}",
        }


def read_rows(path: str) -> tuple[str, list[Row]]:
    """The file's fingerprint (from its bytes) and its rows; BadInput naming every bad row."""
    try:
        with open(path, "rb") as file:
            content = file.read()
        text = content.decode("utf-8-sig")  # a spreadsheet's byte order mark is not a column
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"cannot read {path}: {error}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [name for name in COLUMNS if name not in (reader.fieldnames or [])]
    if missing:
        raise BadInput(f"{path}: the first row must name the columns {', '.join(missing)}")
    rows, problems = [], []
    try:
        for fields in reader:
            try:
                rows.append(parse_row(reader.line_num, fields))
            except ValueError as problem:
                problems.append(f"line {reader.line_num}: {problem}")
    except csv.Error as error:  # a field over the csv module's size limit, say
        raise BadInput(f"{path}: the row after line {reader.line_num}: {error}") from None
    if problems:
        raise BadInput("\n".join([f"{path}: nothing sent, fix these rows:", *problems]))
    if not rows:
        raise BadInput(f"{path}: no rows to send")
    return hashlib.sha256(content).hexdigest()[:32], rows


def parse_row(line: int, fields: dict[str, str | None]) -> Row:
    source, target, amount, reference = (
        (fields.get(name) or "").strip() for name in (*COLUMNS, "reference")
    )
    if not source or not target:
        raise ValueError("from_account and to_account are required")
    # Money is an integer count of minor units: "12.50" or "1e3" is refused, not rounded.
    if not re.fullmatch(r"[0-9]+", amount) or not 1 <= int(amount) <= MONEY_MAX:
        raise ValueError(f"amount {amount!r} is not a whole number of minor units from 1")
    return Row(line, source, target, int(amount), reference)


def described(errors: list[dict[str, Any]]) -> str:
    """Errors as `CODE: message; ...`, whether GraphQL errors (the code in `extensions`) or
    UserErrors."""
    return "; ".join(
        f"{error.get('code') or _extensions_code(error)}: {error.get('message')}"
        for error in errors
    )


def _extensions_code(error: dict[str, Any]) -> Any:
    extensions = error.get("extensions")
    return extensions.get("code") if isinstance(extensions, dict) else None


def post(url: str, api_key: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One POST: the HTTP status and the JSON body ({} when the body is not JSON)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as answer:
            return answer.status, _object(json.load(answer))
    except urllib.error.HTTPError as answer:  # an answer all the same, often coded JSON
        with answer:
            try:
                return answer.code, _object(json.load(answer))
            except ValueError:  # a proxy's error page
                return answer.code, {}


def _object(body: Any) -> dict[str, Any]:
    """A JSON answer that is not an object (`null`, a list) says nothing GraphQL does."""
    return body if isinstance(body, dict) else {}


def post_until_final(
    url: str, api_key: str, payload: dict[str, Any], attempts: int
) -> dict[str, Any]:
    """Send the very same request again only while the answer says the database could not
    take it (RETRYABLE_CODES), the HTTP status says to come back later (RETRYABLE_STATUSES),
    or the answer was lost on the way; waiting longer each time, `attempts` times at most.
    Anything else is final: the data, or NotSent with the refusal no retry can change."""
    last = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(8.0, 0.2 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
        try:
            status, body = post(url, api_key, payload)
        except (OSError, http.client.HTTPException, ValueError) as lost:
            last = f"no answer ({lost})"  # the idempotency keys make sending it again safe
            continue
        raw = body.get("errors") or []
        errors = [
            error if isinstance(error, dict) else {"message": repr(error)}
            for error in (raw if isinstance(raw, list) else [raw])
        ]
        codes = {str(_extensions_code(error)) for error in errors}
        if status in RETRYABLE_STATUSES or (errors and codes <= RETRYABLE_CODES):
            last = f"HTTP {status} {' '.join(sorted(codes))}".strip()
            continue
        data = body.get("data")
        if status == 200 and not errors and isinstance(data, dict):
            return data
        raise NotSent(f"refused (HTTP {status}): {described(errors)}")
    raise NotSent(
        f"not confirmed after {attempts} attempts ({last}): run the file again to finish it"
    )


def send_chunk(
    url: str, api_key: str, chunk: list[Row], keys: Keys, attempts: int
) -> tuple[bool, list[list[dict[str, str]]]]:
    """Send `chunk` as one transferBatch: whether it had been sent by an earlier run of the
    file, and each row's errors ([] when applied)."""
    transfers = [
        {
            "sourceAccountId": row.source,
            "targetAccountId": row.target,
            "amount": row.amount,
            "idempotencyKey": keys.row(row),
        }
        for row in chunk
    ]
    transfers.append(keys.receipt(chunk))
    request = {"query": TRANSFER_BATCH, "variables": {"transfers": transfers}}
    data = post_until_final(url, api_key, request, attempts)
    try:
        batch = data["transferBatch"]
        if batch["errors"]:
            raise NotSent(f"refused: {described(batch['errors'])}")
        *results, receipt = batch["results"]
        replayed = any(e["code"] == "IDEMPOTENCY_KEY_REUSED" for e in receipt["errors"])
        outcomes = [list(result["errors"]) for result in results]
    except (KeyError, TypeError, ValueError, AttributeError):
        # Not this API's answer (another service at that URL, say): whether anything was
        # applied is unknown, and running the file again is what finds out.
        raise NotSent("the answer is not a transferBatch result: check --url") from None
    if len(outcomes) != len(chunk):
        raise NotSent("the answer is not a transferBatch result: check --url")
    return replayed, outcomes


def run(url: str, api_key: str, path: str, chunk_size: int, attempts: int) -> Tally:
    fingerprint, rows = read_rows(path)
    keys, tally = Keys(fingerprint), Tally()
    chunks = [rows[i : i + chunk_size] for i in range(0, len(rows), chunk_size)]
    for number, chunk in enumerate(chunks, 1):
        lines = f"chunk {number}/{len(chunks)}, lines {chunk[0].line}-{chunk[-1].line}"
        try:
            replayed, outcomes = send_chunk(url, api_key, chunk, keys, attempts)
        except NotSent as reason:
            tally.unfinished = sum(len(c) for c in chunks[number - 1 :])
            print(f"{lines}: {reason}", file=sys.stderr)
            print("stopped: later chunks were not sent", file=sys.stderr)
            break
        tally.chunks += 1
        tally.replayed += replayed
        refused = [(row, errors) for row, errors in zip(chunk, outcomes, strict=True) if errors]
        tally.applied += len(chunk) - len(refused)
        for row, errors in refused:
            tally.refused.append((row, described(errors)))
        replay = ", by an earlier run (replayed: nothing applied twice)" if replayed else ""
        print(f"{lines}: {len(chunk) - len(refused)} applied, {len(refused)} refused{replay}")
    return tally


def report(tally: Tally) -> int:
    for row, reason in tally.refused:
        print(f"refused: {row}: {reason}")
    print(
        f"summary: {tally.applied} applied, {len(tally.refused)} refused, "
        f"{tally.unfinished} unfinished; {tally.chunks} chunks, {tally.replayed} replayed"
    )
    return 1 if tally.refused or tally.unfinished else 0


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="CSV: from_account,to_account,amount[,reference]")
    parser.add_argument("--url", default="http://127.0.0.1:8000/graphql")
    parser.add_argument("--key", default=os.environ.get("BANK_API_KEY"), help="or BANK_API_KEY")
    parser.add_argument("--chunk-size", type=int, default=100, help="rows per request")
    parser.add_argument("--attempts", type=int, default=8, help="sends of one request, at most")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("an API key is needed: --key or BANK_API_KEY")
    if not re.match(r"https?://", args.url):
        parser.error(f"--url must be an http:// or https:// URL, not {args.url!r}")
    if not 1 <= args.chunk_size < BATCH_MAX:
        parser.error(f"--chunk-size must be from 1 to {BATCH_MAX - 1}")
    if args.attempts < 1:
        parser.error("--attempts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    try:
        tally = run(args.url, args.key, args.file, args.chunk_size, args.attempts)
    except BadInput as problem:
        print(problem, file=sys.stderr)
        return 2
    return report(tally)


if __name__ == "__main__":
    sys.exit(main())
