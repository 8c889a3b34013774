"""What the server publishes about itself, written from the code so it never drifts:

- ``skills/<name>/SKILL.md``: the workflow prompts (server/prompts.py) as agent skills, so an
  agent that reads skills (Claude Code, Codex) finds the same steps a client gets from
  ``prompts/get``, with the prompt's arguments as inputs to ask for;
- ``server.json``: the MCP registry's description of the server, its PyPI package and the
  environment variables a stdio client may set (from Settings).

``python -m posthog_warehouse_mcp.server.publish`` rewrites what is stale (``--check`` only
names it); ``tests/test_publish.py`` fails while a committed file differs from a fresh render.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import SecretStr

from .. import __version__
from .config import Settings
from .prompts import PROMPTS, Prompt

# The repository's root (this module's real path is server/publish.py).
ROOT = Path(__file__).resolve().parent.parent
SKILLS = ROOT / "skills"
SERVER_JSON = ROOT / "server.json"
REGISTRY_SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
# The registry name; publishing needs the namespace's owner to log in (mcp-publisher), and the
# PyPI package's README carries the matching `mcp-name:` line.
REGISTRY_NAME = "io.github.posthog-warehouse-mcp/posthog-warehouse-mcp"
COMMAND = "python -m posthog_warehouse_mcp.server.publish"
# Settings a stdio client has no use for: serving over HTTP, hosting for many callers.
_HTTP_ONLY = ("mcp_", "forward_key", "confirm_secret", "redis_url", "oauth_")


def render(prompt: Prompt) -> str:
    """One prompt as a SKILL.md: front matter, its inputs, its steps."""
    lines = [
        "---",
        f"name: {prompt.name}",
        f"description: {prompt.description} Uses the posthog-warehouse-mcp tools.",
        "---",
        "",
        f"# {prompt.title}",
        "",
        f"<!-- generated from server/prompts.py by {COMMAND} -->",
        "",
    ]
    if prompt.arguments:
        lines.append("Ask the user for what is missing:")
        lines.extend(
            f"- `{a.name}`: {a.description}{' (required)' if a.required else ''}"
            for a in prompt.arguments
        )
        lines.append("")
    lines.append(prompt.render({a.name: f"<{a.name}>" for a in prompt.arguments}))
    return "\n".join(lines) + "\n"


def server_json() -> str:
    """The registry's server.json: the PyPI package, run over stdio, with its settings."""
    variables = []
    for name, field in Settings.model_fields.items():
        if name.startswith(_HTTP_ONLY):
            continue
        entry: dict[str, object] = {
            "name": Settings.variable(name),
            "description": field.description or name,
            "isRequired": False,
        }
        if field.annotation in (SecretStr, SecretStr | None):
            entry["isSecret"] = True
        elif field.default not in (None, [], ()):
            value = field.default
            entry["default"] = str(value).lower() if isinstance(value, bool) else str(value)
        variables.append(entry)
    document = {
        "$schema": REGISTRY_SCHEMA,
        "name": REGISTRY_NAME,
        "title": "PostHog data warehouse",
        "description": "PostHog data-warehouse imports: sources, tables, syncs; a local sandbox.",
        "version": __version__,
        "packages": [
            {
                "registryType": "pypi",
                "identifier": "posthog-warehouse-mcp",
                "version": __version__,
                "transport": {"type": "stdio"},
                "environmentVariables": variables,
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def rendered() -> dict[Path, str]:
    """Every published file as it should be."""
    files = {SKILLS / prompt.name / "SKILL.md": render(prompt) for prompt in PROMPTS}
    files[SERVER_JSON] = server_json()
    return files


def main(argv: list[str] | None = None) -> int:
    """Rewrite the stale skill files (``--check``: only name them; exit 1 if any)."""
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = [path for path, text in rendered().items() if _read(path) != text]
    for path in stale:
        if check:
            print(f"stale: {path} (run {COMMAND})")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rendered()[path])
            print(f"wrote {path}")
    return 1 if check and stale else 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
