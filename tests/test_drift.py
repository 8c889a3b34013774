"""manifest.json and the README list exactly the table's tools."""

from __future__ import annotations

import json
import re
from pathlib import Path

from posthog_warehouse_mcp import __version__
from posthog_warehouse_mcp.tools.table import ENDPOINTS, TOOLSETS

ROOT = Path(__file__).resolve().parent.parent


def test_manifest_lists_the_table_tools() -> None:
    manifest = json.loads((ROOT / "manifest.json").read_text())
    assert [t["name"] for t in manifest["tools"]] == [row.name for row in ENDPOINTS]
    assert manifest["version"] == __version__
    assert manifest["user_config"]["api_key"]["sensitive"] is True
    env = manifest["server"]["mcp_config"]["env"]
    assert env["POSTHOG_PERSONAL_API_KEY"] == "${user_config.api_key}"
    assert not any("api_key" in arg for arg in manifest["server"]["mcp_config"]["args"])


def test_readme_tool_table_matches_the_table() -> None:
    rows = re.findall(
        r"^\| `([a-z-]+)` \| (GET|POST|PATCH|DELETE) \| `([^`]+)` \| (\w+) \|",
        (ROOT / "README.md").read_text(),
        flags=re.MULTILINE,
    )
    assert rows == [(r.name, r.method, r.path, r.toolset) for r in ENDPOINTS]


def test_pyproject_version_matches() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in text


def test_readme_and_manifest_name_every_scope_and_toolset() -> None:
    readme = (ROOT / "README.md").read_text()
    user_config = json.loads((ROOT / "manifest.json").read_text())["user_config"]
    for scope in sorted({scope for row in ENDPOINTS for scope in row.scopes}):
        assert f"`{scope}`" in readme, scope
        assert scope in user_config["api_key"]["description"], scope
    toolsets = ", ".join(TOOLSETS)
    assert f"Comma list of {toolsets};" in user_config["toolsets"]["description"]
    assert ", ".join(f"`{t}`" for t in TOOLSETS) in readme
