"""What the server publishes about itself (skills, server.json, its icon) is current and valid."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import httpx
import pytest
from mcp import Client

from posthog_warehouse_mcp.server import publish
from posthog_warehouse_mcp.server.app import create_server
from posthog_warehouse_mcp.server.config import Settings
from posthog_warehouse_mcp.server.prompts import PROMPTS
from tests.support import Recorder, settings

ROOT = Path(__file__).resolve().parent.parent


def test_skills_and_server_json_are_the_code_as_it_is_now() -> None:
    for path, text in publish.rendered().items():
        assert path.read_text() == text, f"{path} is stale: run {publish.COMMAND} and commit it"
    committed = {p.parent.name for p in (ROOT / "skills").glob("*/SKILL.md")}
    assert committed == {prompt.name for prompt in PROMPTS}


def test_each_skill_names_itself_and_says_when_to_use_it() -> None:
    for prompt in PROMPTS:
        text = (ROOT / "skills" / prompt.name / "SKILL.md").read_text()
        front = re.match(r"---\nname: (.+)\ndescription: (.+)\n---\n", text)
        assert front is not None, prompt.name
        assert front[1] == prompt.name and prompt.description in front[2]
        for argument in prompt.arguments:  # each argument is an input to ask for, not a hole
            assert "{" + argument.name + "}" not in text and f"<{argument.name}>" in text


def test_server_json_follows_the_registry_rules() -> None:
    # The rules of the registry's server.schema.json (2025-12-11) and its publishing guide.
    document = json.loads((ROOT / "server.json").read_text())
    assert document["$schema"].endswith("/server.schema.json")
    assert re.fullmatch(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+", document["name"])
    assert 1 <= len(document["description"]) <= 100
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (package,) = document["packages"]
    assert document["version"] == package["version"] == version
    assert not re.search(r"[\^~><=*x]|latest", package["version"])
    assert package["registryType"] == "pypi" and package["identifier"] == "posthog-warehouse-mcp"
    assert package["transport"] == {"type": "stdio"}
    names = [v["name"] for v in package["environmentVariables"]]
    assert len(names) == len(set(names))
    for variable in package["environmentVariables"]:
        assert set(variable) <= {"name", "description", "isRequired", "isSecret", "default"}
        assert variable["description"] and isinstance(variable["isRequired"], bool)
    assert {v["name"] for v in package["environmentVariables"] if v.get("isSecret")} == {
        "POSTHOG_PERSONAL_API_KEY"
    }
    # Every setting the bundle passes, other than the secret slots, is described.
    manifest = json.loads((ROOT / "manifest.json").read_text())
    bundle = set(manifest["server"]["mcp_config"]["env"])
    assert {n for n in bundle if not n.startswith("POSTHOG_SECRET_")} <= set(names)
    assert set(names) <= {Settings.variable(name) for name in Settings.model_fields}
    # The PyPI package proves it is this server by naming it in its README.
    assert f"mcp-name: {document['name']}" in (ROOT / "README.md").read_text()


def test_the_bundle_icon_is_a_png_and_initialize_carries_the_server_icon() -> None:
    icon = (ROOT / manifest_icon()).read_bytes()
    assert icon.startswith(b"\x89PNG\r\n\x1a\n")


def manifest_icon() -> str:
    return str(json.loads((ROOT / "manifest.json").read_text())["icon"])


@pytest.mark.anyio
async def test_server_info_has_an_svg_icon() -> None:
    server = create_server(settings(), transport=httpx.ASGITransport(app=Recorder().app()))
    async with Client(server, mode="legacy") as client:
        info = client.server_info
    assert info is not None and info.icons
    assert info.icons[0].mime_type == "image/svg+xml"
    assert info.icons[0].src.startswith("data:image/svg+xml;base64,")
