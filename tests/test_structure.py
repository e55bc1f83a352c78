"""The code's structure, checked by reading the source with `ast`: layers that import
downward only, a pure domain, no import circles, modules and functions of a readable size,
one registry of error codes, and no SQL above the ledger. Each rule has a test feeding it a
bad example, so that a rule which cannot fail is noticed."""

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from bank_graphql.api.codes import ErrorCode
from bank_graphql.ledger import RefusalCode
from tests.test_database_rules import _literal_text, _looks_like_sql

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bank_graphql"
MODULES = sorted(PACKAGE.rglob("*.py"))
LAYERS = ("ledger", "api", "edge", "ops")
"""Lowest first: a layer may import the layers before it, never those after."""
MODULE_LINES_MAX = 300
FUNCTION_LINES_MAX = 70
CODE_REGISTRY = PACKAGE / "api" / "codes.py"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _modules(subpackage: str) -> list[Path]:
    found = [p for p in MODULES if p.is_relative_to(PACKAGE / subpackage)]
    assert found, f"no modules under {subpackage}"
    return found


# -- imports ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Import:
    line: int
    module: str
    names: tuple[str, ...] = ()
    """What `from module import ...` takes: names or submodules."""


def imports(tree: ast.AST, package: str = "") -> Iterator[Import]:
    """Every import of `tree`, wherever it stands (functions, `if TYPE_CHECKING:`), relative
    ones resolved against `package`, `import_module("x")` and `__import__("x")` included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = node.module if node.level == 0 else ".".join([*base, node.module or ""])
            yield Import(node.lineno, (module or "").strip("."), tuple(a.name for a in node.names))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield Import(node.lineno, node.args[0].value)


def _imported_roots(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for found in imports(tree):
        yield found.line, found.module.split(".")[0]


def _forbidden_imports(subpackage: str, forbidden: set[str]) -> list[str]:
    found = []
    for path in _modules(subpackage):
        for line, root in _imported_roots(_parse(path)):
            if root in forbidden:
                found.append(f"{_module_id(path)}:{line} imports {root}")
    return found


def test_ledger_knows_nothing_of_graphql_or_http() -> None:
    forbidden = {"strawberry", "starlette", "graphql", "cross_web", "uvicorn", "httpx"}
    assert _forbidden_imports("ledger", forbidden) == []


def test_api_knows_nothing_of_the_database_driver() -> None:
    assert _forbidden_imports("api", {"psycopg", "psycopg_pool", "psycopg2", "asyncpg"}) == []


def test_domain_is_pure() -> None:
    assert _forbidden_imports("ledger/domain", {"psycopg", "psycopg_pool"}) == []
    # Nor does it reach into the storage or the facade above it.
    assert [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _modules("ledger/domain")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith(
            ("bank_graphql.ledger.storage", "bank_graphql.ledger.service")
        )
    ] == []


def test_layering_check_can_fail() -> None:
    tree = ast.parse("import strawberry\nfrom psycopg import sql\nimport starlette.routing\n")
    assert [root for _, root in _imported_roots(tree)] == ["strawberry", "psycopg", "starlette"]


# -- layers -------------------------------------------------------------------------------------


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "bank_graphql" or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def upward_imports(module: str, tree: ast.AST, package: str) -> list[str]:
    """Imports of `module` from a layer above its own."""
    own = _layer(module)
    assert own is not None, f"{module} belongs to no layer of {LAYERS}"
    return [
        f"{module}:{found.line} imports {found.module}"
        for found in imports(tree, package)
        if (layer := _layer(found.module)) is not None and layer > own
    ]


def _package(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def test_layers_import_downward_only() -> None:
    layered = [p for p in MODULES if p.parent != PACKAGE]
    assert [_module_id(p) for p in MODULES if p not in layered] == ["bank_graphql/__init__.py"]
    found = [
        violation
        for path in layered
        for violation in upward_imports(_module_name(path), _parse(path), _package(path))
    ]
    assert found == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("bank_graphql.ledger.storage.reads", "from bank_graphql.api.errors import ApiError"),
        ("bank_graphql.ledger.service", "from ..edge import app"),
        ("bank_graphql.api.schema", "from bank_graphql.edge import metrics"),
        ("bank_graphql.api.query", "if TYPE_CHECKING:\n    from bank_graphql.ops import cli"),
        ("bank_graphql.edge.app", "def f():\n    import bank_graphql.ops.cli"),
    ],
)
def test_layers_check_can_fail(module: str, source: str) -> None:
    package = module.rpartition(".")[0]
    assert len(upward_imports(module, ast.parse(source), package)) == 1


def test_layers_check_lets_downward_imports_pass() -> None:
    source = "from bank_graphql.ledger import Ledger\nfrom . import codes\nimport strawberry"
    assert upward_imports("bank_graphql.api.schema", ast.parse(source), "bank_graphql.api") == []


# -- import circles -----------------------------------------------------------------------------


def import_graph(sources: dict[str, tuple[ast.AST, str]]) -> dict[str, set[str]]:
    """Module -> the modules of `sources` it imports (`from package import submodule` is
    an import of the submodule)."""
    graph: dict[str, set[str]] = {}
    for module, (tree, package) in sources.items():
        graph[module] = set()
        for found in imports(tree, package):
            submodules = {f"{found.module}.{name}" for name in found.names} & sources.keys()
            graph[module] |= submodules or ({found.module} & sources.keys())
    return graph


def import_circle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A chain of imports from `start` back to itself, or None."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        module = frontier.pop()
        for imported in sorted(graph[module]):
            if imported == start:
                chain = [module]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return [*reversed(chain), start]
            if imported not in came_from:
                came_from[imported] = module
                frontier.append(imported)
    return None


@cache
def _package_graph() -> dict[str, set[str]]:
    return import_graph({_module_name(p): (_parse(p), _package(p)) for p in MODULES})


@pytest.mark.parametrize(
    "module",
    sorted(_module_name(p) for p in MODULES),
)
def test_no_import_circle(module: str) -> None:
    assert import_circle(_package_graph(), module) is None


def test_import_circle_check_can_fail() -> None:
    sources = {
        "p.a": "from p import b",
        "p.b": "import p.c\nimport os",
        "p.c": "if TYPE_CHECKING:\n    from .a import A",
        "p.d": "from p.a import x",
    }
    graph = import_graph({m: (ast.parse(s), "p") for m, s in sources.items()})
    assert import_circle(graph, "p.a") == ["p.a", "p.b", "p.c", "p.a"]
    assert import_circle(graph, "p.d") is None


# -- sizes --------------------------------------------------------------------------------------


def too_long(text: str) -> bool:
    return len(text.splitlines()) > MODULE_LINES_MAX


def long_functions(tree: ast.AST) -> list[str]:
    return [
        f"{node.name}:{node.lineno} has {lines} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (lines := (node.end_lineno or node.lineno) - node.lineno + 1) > FUNCTION_LINES_MAX
    ]


@pytest.mark.parametrize(
    "path",
    [pytest.param(path, id=_module_id(path)) for path in MODULES],
)
def test_module_size(path: Path) -> None:
    assert not too_long(path.read_text())


@pytest.mark.parametrize("path", [pytest.param(p, id=_module_id(p)) for p in MODULES])
def test_function_size(path: Path) -> None:
    assert long_functions(_parse(path)) == []


def test_size_checks_can_fail() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(FUNCTION_LINES_MAX))
    source = f"def short():\n    pass\n\n\nasync def long():\n{body}"
    assert long_functions(ast.parse(source)) == ["long:5 has 71 lines"]
    assert not too_long("x = 1\n" * MODULE_LINES_MAX)
    assert too_long("x = 1\n" * (MODULE_LINES_MAX + 1))


# -- one registry of error codes ----------------------------------------------------------------


def definitions_of(tree: ast.AST, name: str) -> list[int]:
    """Lines where `name` is defined: a class, or a name bound by assignment."""
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.ClassDef) and node.name == name)
        or (isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store))
    )


def spelt_codes(tree: ast.AST, codes: set[str]) -> list[str]:
    """Codes written as string literals rather than named through the registry."""
    return [
        f"{node.lineno}: {node.value}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in codes
    ]


def test_one_error_code_registry() -> None:
    found = [path for path in MODULES for _ in definitions_of(_parse(path), "ErrorCode")]
    assert found == [CODE_REGISTRY]


def test_codes_are_named_through_the_registry() -> None:
    codes = {c.value for c in ErrorCode} | {c.value for c in RefusalCode}
    outside = [p for p in MODULES if not p.is_relative_to(PACKAGE / "ledger")]
    found = [
        f"{_module_id(path)}:{spelt}"
        for path in outside
        if path != CODE_REGISTRY
        for spelt in spelt_codes(_parse(path), codes)
    ]
    assert found == []


def test_registry_checks_can_fail() -> None:
    tree = ast.parse(
        "class ErrorCode:\n    pass\n\n\ndef f():\n    class ErrorCode:\n        pass\n"
        'error_response(404, "NOT_FOUND", "Not Found")\nx = {"code": "fine"}\n'
        'ErrorCode = strawberry.enum(RefusalCode, name="ErrorCode")\n'
    )
    assert definitions_of(tree, "ErrorCode") == [1, 6, 10]
    assert spelt_codes(tree, {"NOT_FOUND", "BAD_REQUEST"}) == ["8: NOT_FOUND"]


# -- no SQL above the ledger --------------------------------------------------------------------


def sql_texts(tree: ast.AST) -> list[int]:
    """Lines of string literals (f-strings included) that read as SQL."""
    return sorted(
        {node.lineno for node in ast.walk(tree) if _looks_like_sql(_literal_text(node) or "")}
    )


@pytest.mark.parametrize("subpackage", ["api", "edge"])
def test_no_sql_above_the_ledger(subpackage: str) -> None:
    found = [
        f"{_module_id(path)}:{line}"
        for path in _modules(subpackage)
        for line in sql_texts(_parse(path))
    ]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        'await conn.execute("SELECT balance FROM accounts WHERE id = %s", (account_id,))',
        'QUERY = """\n    insert into entries (account_id) values (%s)\n"""',
        'sql = f"UPDATE accounts SET balance = {x}"',
    ],
)
def test_sql_check_can_fail(source: str) -> None:
    assert sql_texts(ast.parse(source)) == [1]
