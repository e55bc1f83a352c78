"""One structured log record per GraphQL operation, never carrying inputs, and /metrics."""

import json
import logging
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pythonjsonlogger.json import JsonFormatter

from tests.conftest import GraphQLClient, MakeClient
from tests.operations import DEPOSIT, PAY, TRANSFER, funded

LOGGER = "bank_graphql.requests"
OUTCOMES = {"ok", "refused", "error"}

# Standard LogRecord attributes: anything else on a record is an `extra` field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


@pytest.fixture
def request_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def records_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


async def one_record(
    caplog: pytest.LogCaptureFixture, client: GraphQLClient, payload: object
) -> tuple[httpx.Response, logging.LogRecord]:
    """Post `payload` as JSON and return the response and the one record it logged."""
    caplog.clear()
    response = await client.http.post("/graphql", json=payload)
    records = records_of(caplog)
    assert len(records) == 1, [(r.getMessage(), extras(r)) for r in records]
    return response, records[0]


def assert_operation_record(
    record: logging.LogRecord,
    *,
    name: str | None,
    operation_type: str,
    outcome: str,
    codes: list[str] | None = None,
) -> None:
    fields = extras(record)
    assert fields["operation_name"] == name, fields
    assert fields["operation_type"] == operation_type, fields
    assert isinstance(fields["duration_ms"], int | float), fields
    assert fields["duration_ms"] >= 0, fields
    assert fields["outcome"] in OUTCOMES
    assert fields["outcome"] == outcome, fields
    if codes is None:
        assert not fields.get("error_codes"), fields
    else:
        assert sorted(fields["error_codes"]) == sorted(codes), fields
    assert record.levelno == logging.INFO


def as_json_line(record: logging.LogRecord) -> dict[str, Any]:
    """The record as the server writes it (bank_graphql.edge.logs' formatter), parsed back."""
    formatter = JsonFormatter("{asctime}{levelname}{name}{message}", style="{")
    line: dict[str, Any] = json.loads(formatter.format(record))
    return line


LOOK = """
query Look($id: ID!) { account(id: $id) { id balance } }
mutation Fund($id: ID!) { deposit(input: {accountId: $id, amount: 5}) { balance errors { code } } }
"""


async def test_a_query_logs_one_record_with_its_name_type_and_outcome(
    gql: GraphQLClient, request_log: pytest.LogCaptureFixture
) -> None:
    await funded(gql, "alice", 100)
    response, record = await one_record(
        request_log, gql, {"query": LOOK, "operationName": "Look", "variables": {"id": "alice"}}
    )
    assert response.json() == {"data": {"account": {"id": "alice", "balance": 100}}}
    assert_operation_record(record, name="Look", operation_type="query", outcome="ok")
    line = as_json_line(record)
    assert line["operation_name"] == "Look"
    assert line["operation_type"] == "query"
    assert line["outcome"] == "ok"
    assert line["duration_ms"] >= 0


async def test_a_mutation_logs_one_record(
    gql: GraphQLClient, request_log: pytest.LogCaptureFixture
) -> None:
    await funded(gql, "alice", 100)
    response, record = await one_record(
        request_log, gql, {"query": LOOK, "operationName": "Fund", "variables": {"id": "alice"}}
    )
    assert response.json()["data"]["deposit"] == {"balance": 105, "errors": []}
    assert_operation_record(record, name="Fund", operation_type="mutation", outcome="ok")


async def test_an_anonymous_operation_has_no_name(
    gql: GraphQLClient, request_log: pytest.LogCaptureFixture
) -> None:
    _, record = await one_record(request_log, gql, {"query": "{ accounts { nodes { id } } }"})
    assert_operation_record(record, name=None, operation_type="query", outcome="ok")


async def test_a_mutation_answering_user_errors_is_refused(
    gql: GraphQLClient, request_log: pytest.LogCaptureFixture
) -> None:
    await funded(gql, "alice", 100)
    response, record = await one_record(
        request_log,
        gql,
        {
            "query": "mutation Spend($id: ID!) { pay(input: {accountId: $id, amount: 500}) "
            "{ errors { code } } }",
            "operationName": "Spend",
            "variables": {"id": "alice"},
        },
    )
    assert response.json()["data"]["pay"]["errors"] == [{"code": "INSUFFICIENT_FUNDS"}]
    assert_operation_record(
        record,
        name="Spend",
        operation_type="mutation",
        outcome="refused",
        codes=["INSUFFICIENT_FUNDS"],
    )


ERRORS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "bad variable",
        {"query": DEPOSIT, "variables": {"id": "alice", "amount": -1}},
        "mutation",
        "BAD_USER_INPUT",
    ),
    (
        "bad page size",
        {"query": "query Page { accounts(first: 1000) { nodes { id } } }", "operationName": "Page"},
        "query",
        "BAD_USER_INPUT",
    ),
    (
        "unknown field",
        {"query": "query Nope { accounts { nodes { password } } }", "operationName": "Nope"},
        "query",
        "GRAPHQL_VALIDATION_FAILED",
    ),
    (
        "too costly",
        {"query": "query Big { topSpenders(first: 1000) { accountId } "
         + " ".join(f"t{i}: topSpenders(first: 1000) {{ accountId }}" for i in range(30))
         + " }", "operationName": "Big"},
        "query",
        "QUERY_TOO_COSTLY",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "operation_type", "code"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
async def test_a_graphql_error_is_an_error_with_its_code(
    gql: GraphQLClient,
    request_log: pytest.LogCaptureFixture,
    payload: dict[str, Any],
    operation_type: str,
    code: str,
) -> None:
    await funded(gql, "alice", 100)
    response, record = await one_record(request_log, gql, payload)
    assert code in [e["extensions"]["code"] for e in response.json()["errors"]]
    assert_operation_record(
        record,
        name=payload.get("operationName"),
        operation_type=operation_type,
        outcome="error",
        codes=[code],
    )


UNPARSABLE = {
    "syntax error": "{ account(id: ) { id ",
    "too many tokens": "{ accounts { nodes { " + "id " * 10_001 + "} } }",
    "nested too deeply": "{ " + "a { " * 500 + "b" + " }" * 500 + " }",
}


@pytest.mark.parametrize("query", UNPARSABLE.values(), ids=UNPARSABLE.keys())
async def test_a_document_that_does_not_parse_logs_one_error_record(
    gql: GraphQLClient, request_log: pytest.LogCaptureFixture, query: str
) -> None:
    response, record = await one_record(request_log, gql, {"query": query})
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["GRAPHQL_PARSE_FAILED"]
    fields = extras(record)
    assert fields["outcome"] == "error", fields
    assert fields["error_codes"] == ["GRAPHQL_PARSE_FAILED"], fields
    assert fields["duration_ms"] >= 0


async def test_each_request_logs_exactly_one_record(
    gql: GraphQLClient, request_log: pytest.LogCaptureFixture
) -> None:
    await funded(gql, "alice", 100)
    request_log.clear()
    for i in range(5):
        await gql.post(TRANSFER, {"from": "alice", "to": "alice", "amount": 1})
        await gql.post("{ accounts { nodes { id } } }")
        await gql.post(PAY, {"id": "alice", "amount": i + 1})
    records = records_of(request_log)
    assert len(records) == 15
    assert [extras(r)["outcome"] for r in records] == ["refused", "ok", "ok"] * 5


async def test_a_malformed_json_request_logs_one_record(
    gql: GraphQLClient, request_log: pytest.LogCaptureFixture
) -> None:
    request_log.clear()
    response = await gql.http.post(
        "/graphql", content=b'{"query": "{ accounts', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    records = records_of(request_log)
    assert len(records) == 1, [r.getMessage() for r in records]
    fields = extras(records[0])
    assert fields["error_codes"] == ["BAD_REQUEST"], fields
    as_json_line(records[0])


REFUSED_BEFORE_GRAPHQL: list[tuple[str, dict[str, Any], int]] = [
    ("GET mutation", {"method": "GET", "url": "/graphql", "params": {"query": DEPOSIT}}, 405),
    ("text/plain", {"method": "POST", "url": "/graphql", "content": b"{}",
                    "headers": {"Content-Type": "text/plain"}}, 415),
    ("batch", {"method": "POST", "url": "/graphql", "json": [{"query": "{ __typename }"}]}, 400),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [r[1:] for r in REFUSED_BEFORE_GRAPHQL],
    ids=[r[0] for r in REFUSED_BEFORE_GRAPHQL],
)
async def test_a_request_refused_before_graphql_logs_one_record(
    gql: GraphQLClient,
    request_log: pytest.LogCaptureFixture,
    request_kwargs: dict[str, Any],
    status: int,
) -> None:
    request_log.clear()
    response = await gql.http.request(**request_kwargs)
    assert response.status_code == status
    records = records_of(request_log)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert extras(records[0])["error_codes"] == [response.json()["errors"][0]["extensions"]["code"]]


async def test_a_body_refused_as_too_large_logs_one_record(
    make_client: MakeClient, request_log: pytest.LogCaptureFixture
) -> None:
    # bank_graphql.edge.logs disables uvicorn's access line because "each request refused before
    # GraphQL ran" logs a line of its own: a 413 must not leave the log silent.
    client = await make_client(body_bytes_max=100)
    request_log.clear()
    response = await client.http.post("/graphql", json={"query": "{ __typename }" + " " * 200})
    assert response.status_code == 413
    records = records_of(request_log)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert extras(records[0]).get("error_codes") == ["REQUEST_TOO_LARGE"], extras(records[0])


SECRET_ID = "zq7Xv3secretAcct"
SECRET_OTHER = "kw4Jm9otherAcct"
SECRET_AMOUNT = 918_273_645
SECRET_KEY = "idem-7f3a9c2e-b1d4-secretkey"


def _assert_secret_free(records: list[logging.LogRecord]) -> None:
    secrets = (SECRET_ID, SECRET_OTHER, str(SECRET_AMOUNT), SECRET_KEY)
    for record in records:
        texts = [record.getMessage(), repr(record.args), record.exc_text or ""]
        texts += [json.dumps(value, default=repr) for value in extras(record).values()]
        texts.append(json.dumps(as_json_line(record)))
        for text in texts:
            for secret in secrets:
                assert secret not in text, (secret, record.name, text)


async def test_no_input_or_variable_value_is_ever_logged(
    gql: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bank_graphql")
    key_create = (
        "mutation($id: ID!, $key: String) { createAccount(input: {id: $id, idempotencyKey: $key})"
        " { errors { code } } }"
    )
    requests: list[dict[str, Any]] = [
        {"query": key_create, "variables": {"id": SECRET_ID, "key": SECRET_KEY}},
        {"query": key_create, "variables": {"id": SECRET_OTHER, "key": None}},
        {"query": DEPOSIT, "variables": {"id": SECRET_ID, "amount": SECRET_AMOUNT}},
        {"query": TRANSFER, "variables": {"from": SECRET_ID, "to": SECRET_OTHER, "amount": 17}},
        # Refused with UserErrors: the amount is too large, the account unknown.
        {"query": PAY, "variables": {"id": SECRET_OTHER, "amount": SECRET_AMOUNT}},
        {"query": PAY, "variables": {"id": SECRET_ID + "x", "amount": SECRET_AMOUNT}},
        # GraphQL errors whose messages echo the value.
        {"query": DEPOSIT, "variables": {"id": SECRET_ID, "amount": str(SECRET_AMOUNT)}},
        {"query": DEPOSIT, "variables": {"id": SECRET_ID, "amount": -SECRET_AMOUNT}},
        {
            "query": "query($c: String) { accounts(after: $c) { nodes { id } } }",
            "variables": {"c": SECRET_ID},
        },
        # Inputs written in the document itself.
        {
            "query": f'mutation Lit {{ deposit(input: {{accountId: "{SECRET_ID}", '
            f'amount: {SECRET_AMOUNT}, idempotencyKey: "{SECRET_KEY}"}}) '
            "{ errors { code } } }",
            "operationName": "Lit",
        },
        {"query": f'{{ account(id: "{SECRET_ID}") {{ balance(at: {SECRET_AMOUNT}) }} }}'},
        {"query": f'{{ account(id: "{SECRET_ID}") {{ balance(at: "{SECRET_KEY}") }} }}'},
    ]
    caplog.clear()
    for payload in requests:
        response = await gql.http.post("/graphql", json=payload)
        assert response.status_code < 500
    # Over GET too: the query string is the document.
    await gql.http.get(
        "/graphql",
        params={"query": f'{{ account(id: "{SECRET_ID}") {{ balance }} }}'},
    )
    assert (await gql.ok(f'{{ account(id: "{SECRET_ID}") {{ balance }} }}'))["account"] == {
        "balance": SECRET_AMOUNT - 17
    }
    records = [r for r in caplog.records if r.name.startswith("bank_graphql")]
    assert len([r for r in records if r.name == LOGGER]) >= len(requests) + 2
    _assert_secret_free(records)


# --- /metrics ----------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: GraphQLClient) -> tuple[str, Samples]:
    response = await client.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_are_prometheus_text_with_every_family(gql: GraphQLClient) -> None:
    await gql.ok("{ accounts { nodes { id } } }")
    await gql.error_codes("{ accounts(first: -1) { nodes { id } } }")
    text, samples = await scrape(gql)
    assert "# TYPE bank_graphql_requests_total counter" in text
    assert "# TYPE bank_graphql_errors_total counter" in text
    assert "# TYPE bank_graphql_request_duration_seconds histogram" in text
    assert "# TYPE bank_graphql_pool_connections gauge" in text
    assert "# TYPE bank_graphql_sweeper_lag_seconds gauge" in text
    assert value(samples, "bank_graphql_requests_total", operation_type="query", outcome="ok") >= 1
    assert value(samples, "bank_graphql_errors_total", code="BAD_USER_INPUT") >= 1
    assert ("bank_graphql_pool_connections", frozenset()) in samples
    assert samples[("bank_graphql_pool_connections", frozenset())] >= 1
    assert samples[("bank_graphql_sweeper_lag_seconds", frozenset())] >= 0

    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in samples.items()
        if name == "bank_graphql_request_duration_seconds_bucket"
        and dict(labels).get("operation_type") == "query"
    )
    assert len(buckets) >= 5
    assert buckets[-1][0] == float("inf")
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), buckets  # cumulative
    total = value(samples, "bank_graphql_request_duration_seconds_count", operation_type="query")
    assert counts[-1] == total >= 2


async def test_counters_grow_with_requests(gql: GraphQLClient) -> None:
    await funded(gql, "alice", 100)
    _, before = await scrape(gql)

    for _ in range(3):
        await gql.ok("{ accounts { nodes { id } } }")
    await gql.ok(DEPOSIT, {"id": "alice", "amount": 1, "ts": None})
    data = await gql.ok(PAY, {"id": "alice", "amount": 10_000, "ts": None})
    assert data["pay"]["errors"][0]["code"] == "INSUFFICIENT_FUNDS"
    assert await gql.error_codes(DEPOSIT, {"id": "alice", "amount": 1.5}) == ["BAD_USER_INPUT"]
    bad_json = await gql.http.post(
        "/graphql", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400

    _, after = await scrape(gql)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "bank_graphql_requests_total"
    latency = "bank_graphql_request_duration_seconds"
    expected = {
        "queries ok": (grew(requests, operation_type="query", outcome="ok"), 3),
        "mutations ok": (grew(requests, operation_type="mutation", outcome="ok"), 1),
        "mutations refused": (grew(requests, operation_type="mutation", outcome="refused"), 1),
        "mutations error": (grew(requests, operation_type="mutation", outcome="error"), 1),
        # One error of each code happened: each is counted once.
        "INSUFFICIENT_FUNDS": (grew("bank_graphql_errors_total", code="INSUFFICIENT_FUNDS"), 1),
        "BAD_USER_INPUT": (grew("bank_graphql_errors_total", code="BAD_USER_INPUT"), 1),
        "BAD_REQUEST": (grew("bank_graphql_errors_total", code="BAD_REQUEST"), 1),
        "query latencies": (grew(f"{latency}_count", operation_type="query"), 3),
        "mutation latencies": (grew(f"{latency}_count", operation_type="mutation"), 3),
        "query +Inf bucket": (grew(f"{latency}_bucket", operation_type="query", le="+Inf"), 3),
    }
    wrong = {name: got for name, (got, want) in expected.items() if got != want}
    assert not wrong, f"counted (expected in `expected`): {wrong}"
    assert grew(f"{latency}_sum", operation_type="mutation") > 0


async def test_a_repeated_document_is_parsed_and_validated_once(gql: GraphQLClient) -> None:
    """The document cache hits: five requests of one text (variables differ) parse and
    validate it once; another text costs one more of each."""
    query = "query Once($id: ID!) { account(id: $id) { id balance } }"
    _, before = await scrape(gql)
    for i in range(5):
        assert await gql.ok(query, {"id": f"once{i}"}) == {"account": None}
    _, after = await scrape(gql)

    def grew(name: str) -> float:
        return value(after, name) - value(before, name)

    assert grew("bank_graphql_documents_parsed") == 1
    assert grew("bank_graphql_documents_validated") == 1
    assert value(after, "bank_graphql_documents_cached") >= 1
    await gql.ok("query Twice($id: ID!) { account(id: $id) { id } }", {"id": "x"})
    _, later = await scrape(gql)
    assert (
        value(later, "bank_graphql_documents_parsed")
        - value(after, "bank_graphql_documents_parsed")
        == 1
    )
