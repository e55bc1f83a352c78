"""The build step of the GraphiQL playground: its pinned browser files are downloaded from
the npm registry, checked against their integrity hashes and unpacked into the package
(bank_graphql/edge/playground/static/) before the package is built, for a wheel as for an
editable install. See "The playground" in README.md."""

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py

_PINS = Path(__file__).resolve().parent / "bank_graphql" / "edge" / "playground" / "pins.py"


def _pins() -> ModuleType:
    # By path: importing the package would need its dependencies, absent at build time.
    spec = importlib.util.spec_from_file_location("bank_graphql_playground_pins", _PINS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class BuildWithPlayground(build_py):
    def run(self) -> None:
        pins = _pins()
        try:
            if pins.fetch_assets():
                self.announce(f"playground: files unpacked into {pins.STATIC}", logging.INFO)
        except pins.PlaygroundFetchError as exc:
            raise SystemExit(f"error: the playground's files: {exc}") from None
        super().run()


setup(cmdclass={"build_py": BuildWithPlayground})
