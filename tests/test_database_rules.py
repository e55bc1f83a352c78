"""Rules that hold below the API: the database's own guards, the exported SDL, and the code's
SQL hygiene (checked by reading the source with `ast`; the code's structure is
tests/test_structure.py's)."""

import ast
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bank_graphql.api.schema import build_schema
from tests.conftest import GraphQLClient
from tests.operations import balance, deposit, funded

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bank_graphql"
COMMITTED_SDL = ROOT / "schema.graphql"

Db = psycopg.AsyncConnection[Any]


# -- the ledger is append-only, whoever asks -------------------------------------------------


async def _entries(db: Db) -> list[tuple[Any, ...]]:
    cursor = await db.execute("SELECT * FROM entries ORDER BY id")
    return await cursor.fetchall()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE entries SET amount = amount + 1",
        "UPDATE entries SET balance_after = 0 WHERE kind = 'DEPOSIT'",
        "DELETE FROM entries",
        "DELETE FROM entries WHERE id = (SELECT max(id) FROM entries)",
        "TRUNCATE entries",
        "TRUNCATE entries CASCADE",
    ],
)
async def test_entries_refuse_rewrites_issued_directly(
    gql: GraphQLClient, db: Db, statement: str
) -> None:
    await funded(gql, "alice", 500)
    assert (await deposit(gql, "alice", 250, 2_000))["errors"] == []
    before = await _entries(db)
    assert len(before) == 2
    # A plain TRUNCATE is stopped first by the live feed's reference to every entry.
    with pytest.raises(psycopg.Error, match=r"append-only|referenced in a foreign key"):
        await db.execute(statement)
    assert await _entries(db) == before
    assert await balance(gql, "alice") == 750


async def test_entries_refuse_rewrites_inside_a_transaction(gql: GraphQLClient, db: Db) -> None:
    await funded(gql, "alice", 500)
    before = await _entries(db)
    with pytest.raises(psycopg.Error, match="append-only"):
        async with db.transaction():
            await db.execute("UPDATE entries SET amount = 1")
    assert await _entries(db) == before


async def test_entries_still_accept_appends(gql: GraphQLClient, db: Db) -> None:
    """The guard refuses rewrites only: the API keeps appending."""
    await funded(gql, "alice", 500)
    assert (await deposit(gql, "alice", 1, 2_000))["errors"] == []
    assert len(await _entries(db)) == 2


# -- CHECK constraints -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "actor"),
    [("DEPOSIT", None), ("DEPOSIT", "system"), ("CASHBACK", "key:abcdefabcdef")],
)
async def test_every_new_entry_names_its_actor_and_only_cashback_is_the_systems(
    gql: GraphQLClient, db: Db, kind: str, actor: str | None
) -> None:
    await funded(gql, "alice", 500)
    before = await _entries(db)
    with pytest.raises(psycopg.errors.CheckViolation, match="entry_names_actor"):
        await db.execute(
            "INSERT INTO entries (account_id, ts, kind, amount, balance_after, payment_id, actor)"
            " VALUES ('alice', 3000, %s, 5, 505, NULL, %s)",
            (kind, actor),
        )
    assert await _entries(db) == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE accounts SET balance = -1 WHERE id = 'alice'",
        "UPDATE accounts SET balance = balance - 501 WHERE id = 'alice'",
        "INSERT INTO accounts (id, created_at, balance, last_entry_at, survivor_id)"
        " VALUES ('neg', 0, -5, 0, 'neg')",
        "INSERT INTO entries (account_id, ts, kind, amount, balance_after, actor)"
        " VALUES ('alice', 3000, 'DEPOSIT', -5, 495, 'anonymous')",
        "INSERT INTO entries (account_id, ts, kind, amount, balance_after, actor)"
        " VALUES ('alice', 3000, 'DEPOSIT', 5, -5, 'anonymous')",
        "INSERT INTO payments (id, account_id, ts, amount, cashback, cashback_due_at, settled)"
        " VALUES (999, 'alice', 3000, -100, -2, 86403000, false)",
    ],
)
async def test_check_constraints_refuse_negative_money(
    gql: GraphQLClient, db: Db, statement: str
) -> None:
    await funded(gql, "alice", 500)
    before = await _entries(db)
    with pytest.raises(psycopg.errors.CheckViolation):
        await db.execute(statement)
    assert await _entries(db) == before
    assert await balance(gql, "alice") == 500
    cursor = await db.execute("SELECT count(*) FROM accounts")
    assert await cursor.fetchone() == (1,)


# -- the exported SDL ---------------------------------------------------------------------------


def _exported_sdl() -> str:
    return build_schema().as_str()


def test_exported_sdl_is_the_committed_schema_graphql() -> None:
    assert COMMITTED_SDL.exists(), (
        f"{COMMITTED_SDL} is missing: export it with build_schema().as_str()"
    )
    assert COMMITTED_SDL.read_text().strip() == _exported_sdl().strip(), (
        "schema.graphql is stale: export it again from build_schema().as_str()"
    )


# The public contract beside the project is checked by .ci/run, which alone may reach
# beyond it: the tests pass in a clone of the project alone.


# -- no string-formatted SQL --------------------------------------------------------------------

_SQL = re.compile(
    r"\b(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\s+[\w.\"]+\s+SET|DELETE\s+FROM)\b",
    re.IGNORECASE | re.DOTALL,
)


def _looks_like_sql(text: str) -> bool:
    return bool(_SQL.search(text))


def _literal_text(node: ast.AST) -> str | None:
    """The constant text of a str literal or f-string (placeholders left out), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
    return None


def formatted_sql(source: str) -> list[tuple[int, str]]:
    """Places where SQL text is built by string formatting rather than passed as parameters."""
    tree = ast.parse(source)
    # Names bound to SQL string constants: `_QUERY = "SELECT ..."`.
    sql_names = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and node.value is not None
        and _looks_like_sql(_literal_text(node.value) or "")
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }

    def is_sql_text(node: ast.AST) -> bool:
        text = _literal_text(node)
        if text is not None:
            return _looks_like_sql(text)
        return isinstance(node, ast.Name) and node.id in sql_names

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and any(
            isinstance(v, ast.FormattedValue) for v in node.values
        ):
            if is_sql_text(node):
                found.append((node.lineno, "f-string"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if is_sql_text(node.left):
                found.append((node.lineno, "%-formatting"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            sides = (node.left, node.right)
            if any(is_sql_text(s) for s in sides) and not all(
                isinstance(s, ast.Constant) for s in sides
            ):
                found.append((node.lineno, "concatenation"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"format", "format_map"}
            and is_sql_text(node.func.value)
        ):
            found.append((node.lineno, ".format()"))
    return found


def test_no_sql_is_built_by_string_formatting() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 10
    found = [
        f"{path.relative_to(ROOT)}:{line}: {how}"
        for path in modules
        for line, how in formatted_sql(path.read_text())
    ]
    assert found == []


@pytest.mark.parametrize(
    ("source", "how"),
    [
        ('q = f"SELECT * FROM entries WHERE id = {x}"', "f-string"),
        ('q = f"""\nselect balance\nfrom accounts where id = \'{x}\'"""', "f-string"),
        ('q = "DELETE FROM entries WHERE id = %s" % x', "%-formatting"),
        ('q = "UPDATE accounts SET balance = {}".format(x)', ".format()"),
        ('Q = "INSERT INTO entries VALUES ({})"\nq = Q.format(x)', ".format()"),
        ("Q = \"SELECT 1 FROM accounts WHERE id = '%s'\"\nq = Q % x", "%-formatting"),
        ('q = "SELECT * FROM accounts WHERE id = \'" + x + "\'"', "concatenation"),
    ],
)
def test_formatted_sql_check_can_fail(source: str, how: str) -> None:
    assert [h for _, h in formatted_sql(source)][:1] == [how]


@pytest.mark.parametrize(
    "source",
    [
        'conn.execute("SELECT * FROM entries WHERE id = %s", (x,))',
        'SQL("SELECT {} FROM {}").format(Identifier(a), Identifier(b))',
        'log.info("selected %s rows from %s", n, t)',
        'message = f"cannot update {what}"',
        'options = f"-c statement_timeout={ms}"',
    ],
)
def test_formatted_sql_check_lets_safe_code_pass(source: str) -> None:
    assert formatted_sql(source) == []
