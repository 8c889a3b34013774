"""Regenerate every file derived from the endpoint table, in one command:

    python -m posthog_warehouse_mcp.tools.snapshot          # rewrite what is stale
    python -m posthog_warehouse_mcp.tools.snapshot --check  # only say what is (exit status 1)

- ``tools/tools.json``: every tool definition (the reviewed snapshot and the start-up cache);
- ``docs/tools.md``: the tool table and read-only mode's tool list, each between a
  ``<!-- begin generated NAME ... -->`` and an ``<!-- end generated NAME -->`` line (the text
  around them is written by hand and left as it is);
- ``manifest.json``: the bundle's ``tools`` list (the rest of the file is kept as it is).

Run it after changing a row, a model or a schema rule, and commit the result; tests fail while
any of these files differs from a fresh render (tests/test_table.py, tests/test_drift.py).
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .definitions import TOOLS_JSON, generate
from .table import ENDPOINTS, Endpoint

COMMAND = "python -m posthog_warehouse_mcp.tools.snapshot"
# The repository root, through the tools/ link (docs/ and manifest.json are not packaged).
ROOT = Path(__file__).resolve().parent.parent
TOOLS_DOC = ROOT / "docs" / "tools.md"
MANIFEST = ROOT / "manifest.json"


def render() -> str:
    """``tools.json`` as it should be now: indented, keys sorted, so a diff reviews well."""
    return json.dumps(generate(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def nature(row: Endpoint) -> str:
    """What a call does, as the tool table says it: from the row's annotations."""
    if row.is_destructive:
        return "destructive"
    return "read-only" if row.is_read_only else "write"


def tool_table(rows: Iterable[Endpoint] = ENDPOINTS) -> list[str]:
    """The tool table of ``docs/tools.md``, one line per row, in the table's order."""
    lines = ["", "| tool | method | path | toolset | nature |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (f"`{row.name}`", row.method, f"`{row.path}`", row.toolset, nature(row))
        lines.append(f"| {' | '.join(cells)} |")
    # Blank lines around it, so that no Markdown reads a marker as one of its rows.
    return [*lines, ""]


def read_only_tools(rows: Sequence[Endpoint] = ENDPOINTS) -> list[str]:
    """The list of what read-only mode keeps, and the read-only tools it leaves out."""
    kept = [row.name for row in rows if row.read_scoped]
    left_out = [row for row in rows if row.is_read_only and not row.read_scoped]
    scopes = sorted({scope for row in left_out for scope in row.scopes})
    items = (
        f"- offered: {_names(kept)};",
        f"- annotated `readOnlyHint` but needing {_names(scopes)}, so left out: "
        f"{_names(row.name for row in left_out)}.",
    )
    # Wrapped as docs/tools.md is (a list inside a list item), never inside a name.
    return [
        line
        for item in items
        for line in textwrap.wrap(
            item, width=98, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False
        )
    ]


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names) or "none"


# The generated regions of docs/tools.md, by the name their markers carry.
REGIONS: dict[str, Callable[[], list[str]]] = {
    "tool-table": tool_table,
    "read-only-tools": read_only_tools,
}


def begin_marker(name: str) -> str:
    """The line that opens a generated region (the closing one is :func:`end_marker`)."""
    return f"<!-- begin generated {name} ({COMMAND}) -->"


def end_marker(name: str) -> str:
    """The line that closes a generated region."""
    return f"<!-- end generated {name} -->"


def replace_region(text: str, name: str, lines: Sequence[str]) -> str:
    """``text`` with the region ``name`` holding ``lines``, indented as its opening marker is.

    Raises:
        ValueError: ``text`` does not have exactly one such region.
    """
    begin, end = re.escape(begin_marker(name)), re.escape(end_marker(name))
    pattern = re.compile(rf"^(?P<indent>[ \t]*){begin}\n.*?^[ \t]*{end}$", re.MULTILINE | re.DOTALL)
    found = list(pattern.finditer(text))
    if len(found) != 1:
        raise ValueError(
            f"expected one generated region {name!r} ({begin_marker(name)} ... "
            f"{end_marker(name)}), found {len(found)}"
        )
    match = found[0]
    indent = match["indent"]
    block = "\n".join(indent + line for line in (begin_marker(name), *lines, end_marker(name)))
    return text[: match.start()] + block + text[match.end() :]


def render_tools_doc(text: str) -> str:
    """``docs/tools.md`` with every generated region rendered from the table."""
    for name, lines in REGIONS.items():
        text = replace_region(text, name, lines())
    return text


def render_manifest(text: str) -> str:
    """``manifest.json`` with its ``tools`` list rendered from the table, in its own format."""
    manifest = json.loads(text)
    manifest["tools"] = [{"name": row.name, "description": row.title} for row in ENDPOINTS]
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Generated:
    """A file the command writes, and how: from its committed text to what it should be."""

    path: Path
    render: Callable[[str], str]


GENERATED = (
    Generated(TOOLS_JSON, lambda _text: render()),
    Generated(TOOLS_DOC, render_tools_doc),
    Generated(MANIFEST, render_manifest),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the stale files, or with ``--check`` only name them (exit status 1 if any)."""
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = 0
    for file in GENERATED:
        try:
            committed = file.path.read_text() if file.path.exists() else ""
            fresh = file.render(committed)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{file.path}: {exc}") from None
        if fresh == committed:
            print(f"current: {file.path}")
            continue
        stale += 1
        if check:
            print(f"stale: {file.path} (run {COMMAND})")
        else:
            file.path.write_text(fresh)
            print(f"wrote {file.path}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
