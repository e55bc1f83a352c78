"""The wheel carries every file the program reads at run time, and reads its migrations from
inside it. (.ci/run installs it into a fresh virtualenv and serves from it.)"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bank_graphql.edge.playground import pins

ROOT = Path(__file__).parent.parent
MIGRATIONS = ROOT / "bank_graphql" / "ledger" / "sql" / "migrations"
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)

READ_MIGRATIONS = """
import sys
sys.path.insert(0, sys.argv[1])
from bank_graphql.ledger.storage import migrations
print(migrations.__file__)
for migration in migrations.migrations():
    assert migration.sql().strip()
    print(migration.file_name)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built once from a copy (setuptools writes its build folder next to the
    sources) holding the playground's unpacked files, as the editable install left them."""
    assert not pins.missing()
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    build = ["wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build, "--wheel-dir", str(folder / "dist")],
        check=True,
        timeout=120,
    )
    (built,) = (folder / "dist").glob("bank_graphql-*.whl")
    return built


def test_the_wheel_ships_every_migration_and_reads_them(wheel: Path, tmp_path: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"bank_graphql/ledger/sql/migrations/{p.name}" for p in MIGRATIONS.glob("*.sql")}
    assert len(shipped) >= 2
    assert shipped <= names
    assert "bank_graphql/py.typed" in names

    # Imported from the wheel itself (a zip): the migrations are found through the package.
    read = subprocess.run(
        [sys.executable, "-c", READ_MIGRATIONS, str(wheel)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.splitlines()
    assert read[0].startswith(str(wheel))
    assert read[1:] == sorted(p.name for p in MIGRATIONS.glob("*.sql"))


def test_the_wheel_ships_the_pinned_playground_files(wheel: Path) -> None:
    # The build step finds them in place, and the package data takes them into the wheel.
    with zipfile.ZipFile(wheel) as archive:
        for name in pins.ASSETS:
            shipped = archive.read(f"bank_graphql/edge/playground/static/{name}")
            assert shipped == (pins.STATIC / name).read_bytes(), name
