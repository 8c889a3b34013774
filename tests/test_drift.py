"""manifest.json and docs/tools.md say what the table says: their generated parts are a fresh
render (``python -m posthog_warehouse_mcp.tools.snapshot``), and the hand-written rest agrees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posthog_warehouse_mcp import __version__
from posthog_warehouse_mcp.tools import snapshot
from posthog_warehouse_mcp.tools.table import ENDPOINTS, TOOLSETS

ROOT = Path(__file__).resolve().parent.parent
STALE = (
    "{} differs from the table: run python -m posthog_warehouse_mcp.tools.snapshot and commit it"
)


def test_the_command_writes_the_files_these_tests_read() -> None:
    assert snapshot.TOOLS_DOC == ROOT / "docs" / "tools.md"
    assert snapshot.MANIFEST == ROOT / "manifest.json"


def test_tools_doc_generated_regions_are_current() -> None:
    # The tool table and read-only mode's list, between their begin/end generated markers.
    committed = snapshot.TOOLS_DOC.read_text()
    assert committed == snapshot.render_tools_doc(committed), STALE.format("docs/tools.md")


def test_manifest_tools_are_current() -> None:
    committed = snapshot.MANIFEST.read_text()
    assert committed == snapshot.render_manifest(committed), STALE.format("manifest.json")


def test_the_generated_parts_name_every_tool_once() -> None:
    doc = snapshot.TOOLS_DOC.read_text()
    manifest = json.loads(snapshot.MANIFEST.read_text())
    assert [t["name"] for t in manifest["tools"]] == [row.name for row in ENDPOINTS]
    for row in ENDPOINTS:
        assert doc.count(f"| `{row.name}` | {row.method} | `{row.path}` |") == 1, row.name


def test_a_tools_doc_without_a_region_is_refused_not_skipped() -> None:
    doc = snapshot.TOOLS_DOC.read_text()
    broken = doc.replace(snapshot.end_marker("read-only-tools"), "")
    with pytest.raises(ValueError, match="read-only-tools"):
        snapshot.render_tools_doc(broken)


def test_a_region_is_rewritten_whatever_it_holds() -> None:
    doc = snapshot.TOOLS_DOC.read_text()
    emptied = snapshot.replace_region(doc, "tool-table", ["hand-edited"])
    assert snapshot.render_tools_doc(emptied) == snapshot.render_tools_doc(doc)


def test_manifest_is_the_bundle_the_package_describes() -> None:
    manifest = json.loads(snapshot.MANIFEST.read_text())
    assert manifest["version"] == __version__
    assert manifest["user_config"]["api_key"]["sensitive"] is True
    env = manifest["server"]["mcp_config"]["env"]
    assert env["POSTHOG_PERSONAL_API_KEY"] == "${user_config.api_key}"
    assert not any("api_key" in arg for arg in manifest["server"]["mcp_config"]["args"])


def test_pyproject_version_matches() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in text


def test_tools_doc_and_manifest_name_every_scope_and_toolset() -> None:
    doc = snapshot.TOOLS_DOC.read_text()
    user_config = json.loads(snapshot.MANIFEST.read_text())["user_config"]
    for scope in sorted({scope for row in ENDPOINTS for scope in row.scopes}):
        assert f"`{scope}`" in doc, scope
        assert scope in user_config["api_key"]["description"], scope
    toolsets = ", ".join(TOOLSETS)
    assert f"Comma list of {toolsets};" in user_config["toolsets"]["description"]
    assert ", ".join(f"`{t}`" for t in TOOLSETS) in " ".join(doc.split())


def test_the_readme_names_every_scope_a_key_needs() -> None:
    # A newcomer creates the key from the README's PostHog section, not from the reference.
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Use it with PostHog")
    section = readme[start : readme.index("\n## ", start)]
    for scope in sorted({scope for row in ENDPOINTS for scope in row.scopes}):
        assert f"`{scope}`" in section, scope
