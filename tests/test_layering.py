"""The folders keep their floors: read from the files' own imports, not from a drawing.

- ``loopback/`` is the bottom: it imports none of the other folders;
- ``tools/`` imports neither ``server/`` nor ``sandbox/``;
- ``sandbox/`` imports neither ``server/`` nor ``tools/`` (the contract tests compare the two
  independent descriptions of PostHog's API);
- ``server/`` imports ``sandbox/`` only inside a function or under ``if TYPE_CHECKING``, so
  that a server that runs no sandbox never loads it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "posthog_warehouse_mcp"
FOLDERS = ("server", "tools", "sandbox", "loopback")

Kind = Literal["top", "lazy", "typing"]

# folder -> the folders it must not import, and the kinds of import that break the rule.
NEVER: dict[str, dict[str, tuple[Kind, ...]]] = {
    "loopback": {f: ("top", "lazy", "typing") for f in ("server", "tools", "sandbox")},
    "tools": {f: ("top", "lazy", "typing") for f in ("server", "sandbox")},
    "sandbox": {f: ("top", "lazy", "typing") for f in ("server", "tools")},
    "server": {"sandbox": ("top",)},
}
HOW = {"top": "at module level", "lazy": "inside a function", "typing": "under TYPE_CHECKING"}


@dataclass(frozen=True)
class Edge:
    """One import statement of a module, and the folder of the package it reaches."""

    line: int
    statement: str
    folder: str
    kind: Kind


def _folder(dotted: str) -> str | None:
    """The folder an absolute module name is in, if it is one of ours."""
    parts = dotted.split(".")
    if parts[0] == PACKAGE:
        parts = parts[1:]
    # A bare `server.x` is our folder imported by mistake under a generic name: it counts too.
    return parts[0] if parts and parts[0] in FOLDERS else None


def _targets(node: ast.Import | ast.ImportFrom, module: list[str]) -> Iterator[str]:
    """The absolute names an import statement reaches, its relative form resolved against
    `module` (the importing module's dotted name, split)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level == 0:
        base = (node.module or "").split(".")
    else:
        # A module's package is its name without the last part (an __init__ is named as its
        # package plus "__init__", so that rule holds for it too); each level above 1 climbs one.
        package = module[:-1]
        base = package[: len(package) - (node.level - 1)] + (
            node.module.split(".") if node.module else []
        )
    # `from posthog_warehouse_mcp import sandbox` reaches the folder through the name imported.
    for alias in node.names:
        yield ".".join([*base, alias.name])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def edges(source: str, module: str) -> Iterator[Edge]:
    """Every import of one of our folders in `source`, the text of module `module`."""
    parts = module.split(".")

    def walk(nodes: Iterable[ast.AST], kind: Kind) -> Iterator[Edge]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, parts):
                    folder = _folder(target)
                    if folder is not None:
                        yield Edge(node.lineno, ast.unparse(node), folder, kind)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(node.body, "typing" if kind == "typing" else "lazy")
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, "typing")
                yield from walk(node.orelse, kind)
            else:
                yield from walk(ast.iter_child_nodes(node), kind)

    yield from walk([ast.parse(source)], "top")


def module_name(path: Path) -> str:
    """The dotted name a file of one of the folders is imported as."""
    relative = path.relative_to(ROOT).with_suffix("")
    return ".".join([PACKAGE, *relative.parts])


def _rule(folder: str, other: str) -> str:
    allowed = [HOW[k] for k in ("lazy", "typing") if k not in NEVER[folder][other]]
    if allowed:
        return f"{folder}/ imports {other}/ only {' or '.join(allowed)}"
    return f"{folder}/ never imports {other}/"


def violations(folder: str, source: str, module: str, where: str) -> list[str]:
    """What in one module breaks its folder's rules, as `file:line: ...` lines."""
    forbidden = NEVER[folder]
    return [
        f"{where}:{edge.line}: `{edge.statement}` imports {edge.folder}/ {HOW[edge.kind]}; "
        + _rule(folder, edge.folder)
        for edge in edges(source, module)
        if edge.kind in forbidden.get(edge.folder, ())
    ]


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_folder_imports_only_what_its_floor_allows(folder: str) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no modules found in {folder}/"
    found = [
        problem
        for path in files
        for problem in violations(
            folder, path.read_text(), module_name(path), str(path.relative_to(ROOT))
        )
    ]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("folder", "module", "source", "reaches"),
    [
        ("sandbox", "sandbox.api", "from ..server.config import Settings", "server"),
        ("sandbox", "sandbox.connectors.postgres", "from ...tools import table", "tools"),
        ("sandbox", "sandbox.__init__", "from .. import tools", "tools"),
        ("tools", "tools.table", "from posthog_warehouse_mcp.sandbox import api", "sandbox"),
        ("tools", "tools.table", "import posthog_warehouse_mcp.server.app", "server"),
        ("tools", "tools.table", "def f():\n    from ..server import app", "server"),
        ("tools", "tools.table", "import server.app", "server"),
        ("loopback", "loopback.pages", "from ..sandbox import errors", "sandbox"),
        ("server", "server.cli", "from ..sandbox.sql import main", "sandbox"),
        (
            "server",
            "server.cli",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    pass\n"
            "else:\n    from ..sandbox import api",
            "sandbox",
        ),
    ],
)
def test_the_check_catches_a_forbidden_import(
    folder: str, module: str, source: str, reaches: str
) -> None:
    (problem,) = violations(folder, source, f"{PACKAGE}.{module}", "x.py")
    assert problem.startswith("x.py:") and f"imports {reaches}/" in problem


@pytest.mark.parametrize(
    ("folder", "module", "source"),
    [
        ("server", "server.cli", "def main():\n    from ..sandbox.sql import main"),
        ("server", "server.app", "if TYPE_CHECKING:\n    from ..sandbox.access import Access"),
        ("server", "server.auth", "from ..loopback.tokens import tokens_match"),
        ("server", "server.cli", "from .. import __version__"),
        ("sandbox", "sandbox.connect", "from ..loopback.pages import render"),
        ("sandbox", "sandbox.connectors.postgres", "from ..cloud_rules import REQUIRE_TLS"),
        ("tools", "tools.client", "from .errors import APIError"),
    ],
)
def test_the_check_lets_an_allowed_import_pass(folder: str, module: str, source: str) -> None:
    assert violations(folder, source, f"{PACKAGE}.{module}", "x.py") == []
