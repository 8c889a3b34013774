"""Every client configuration in docs/clients.md and the README starts a server that lists its
tools.

Each snippet's launcher (``uvx --from SPEC``, ``pipx run --spec SPEC``, or a path to the console
script) is checked for shape and replaced by this venv's ``posthog-warehouse-mcp``, so the test
runs offline; the server's own flags from the snippet are passed on unchanged, so the CLI parser
really accepts them.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from posthog_warehouse_mcp.server.app import listing_for
from posthog_warehouse_mcp.server.cli import parser, settings_from
from posthog_warehouse_mcp.tools.table import ENDPOINTS, TOOLSETS
from tests.support import use_env

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
CLIENTS_DOC = ROOT / "docs" / "clients.md"
README = ROOT / "README.md"
ENTRY = "posthog-warehouse-mcp"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^## (.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Snippet:
    """One server entry of a client configuration."""

    where: str
    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    type: str | None = None


def _blocks(language: str, doc: Path = CLIENTS_DOC) -> list[tuple[str, str]]:
    """(section heading, body) of every fenced block in ``language``; the README's sections
    are named ``README <heading>``."""
    text = doc.read_text(encoding="utf-8")
    prefix = "README " if doc == README else ""
    headings = [(m.start(), m.group(1)) for m in HEADING.finditer(text)]
    found: list[tuple[str, str]] = []
    for match in FENCE.finditer(text):
        if match.group(1) == language:
            section = [title for start, title in headings if start < match.start()]
            found.append((prefix + (section[-1] if section else "top"), match.group(2)))
    return found


def _json_snippets(doc: Path = CLIENTS_DOC) -> list[Snippet]:
    snippets: list[Snippet] = []
    for index, (section, body) in enumerate(_blocks("json", doc)):
        config = json.loads(body)
        servers = config.get("mcpServers", config.get("servers"))
        assert isinstance(servers, dict) and servers, f"{section}: no mcpServers/servers"
        for name, entry in servers.items():
            snippets.append(
                Snippet(
                    where=f"{section} json#{index} {name}",
                    command=entry["command"],
                    args=tuple(entry.get("args", [])),
                    env=tuple(sorted(entry.get("env", {}).items())),
                    type=entry.get("type"),
                )
            )
    return snippets


def _claude_mcp_add_snippets() -> list[Snippet]:
    snippets: list[Snippet] = []
    for section, body in _blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens[:3] != ["claude", "mcp", "add"]:
                continue
            split = tokens.index("--")
            options, launch = tokens[3:split], tokens[split + 1 :]
            env = [options[i + 1] for i, opt in enumerate(options) if opt in ("-e", "--env")]
            assert options[options.index("--transport") + 1] == "stdio"
            snippets.append(
                Snippet(
                    where=f"{section} claude-mcp-add#{len(snippets)}",
                    command=launch[0],
                    args=tuple(launch[1:]),
                    env=tuple(sorted((k, v) for k, _, v in (kv.partition("=") for kv in env))),
                )
            )
    return snippets


SNIPPETS = _json_snippets() + _claude_mcp_add_snippets() + _json_snippets(README)


def server_flags(snippet: Snippet) -> list[str]:
    """The server's own flags, after checking the launcher's arguments."""
    args = list(snippet.args)
    if snippet.command == ENTRY:
        return args
    if Path(snippet.command).name == ENTRY:
        # The console script by path (a clone's .venv), as GUI clients without a PATH need it.
        assert snippet.command.endswith(f"/.venv/bin/{ENTRY}"), snippet.where
        return args
    launcher = Path(snippet.command).name
    if launcher == "uvx":
        assert args[0] == "--from", snippet.where
        spec, rest = args[1], args[2:]
    elif launcher == "pipx":
        assert args[:2] == ["run", "--spec"], snippet.where
        spec, rest = args[2], args[3:]
    else:
        pytest.fail(f"{snippet.where}: unexpected command {snippet.command!r}")
    assert rest[:1] == [ENTRY], f"{snippet.where}: the console script must follow the spec"
    assert spec.startswith(("/", ".", "${workspaceFolder}", f"{ENTRY} @ ", f"{ENTRY}[")), spec
    flags = rest[1:]
    if "--sandbox" in flags:
        assert "[sandbox]" in spec, f"{snippet.where}: --sandbox needs the [sandbox] extra"
    return flags


def expected_tools(flags: list[str], env: dict[str, str]) -> set[str]:
    """The tool names the server should list for these flags (read-only and toolsets)."""
    read_only = "--read-only" in flags or env.get("POSTHOG_READ_ONLY", "").lower() in (
        "1",
        "true",
    )
    toolsets = env.get("POSTHOG_TOOLSETS", "")
    if "--toolsets" in flags:
        toolsets = flags[flags.index("--toolsets") + 1]
    chosen = {t.strip() for t in toolsets.split(",") if t.strip()}
    assert chosen <= set(TOOLSETS)
    return {
        row.name
        for row in ENDPOINTS
        if (row.read_scoped or not read_only) and (not chosen or row.toolset in chosen)
    }


def local_server() -> tuple[str, list[str]]:
    """This venv's console script (or ``python -m posthog_warehouse_mcp`` if not installed)."""
    script = Path(sys.executable).with_name(ENTRY)
    if script.exists():
        return str(script), []
    return sys.executable, ["-m", "posthog_warehouse_mcp"]


def test_every_client_has_snippets() -> None:
    sections = {s.where.split(" json#")[0].split(" claude-mcp-add#")[0] for s in SNIPPETS}
    assert {"Claude Desktop", "Claude Code", "Cursor"} <= sections
    assert any(s.startswith("VS Code") for s in sections)
    assert any(" claude-mcp-add#" in s.where for s in SNIPPETS)
    launchers = {Path(s.command).name for s in SNIPPETS}
    assert {"uvx", "pipx"} <= launchers
    vscode = [s for s in SNIPPETS if s.where.startswith("VS Code")]
    assert vscode and all(s.type == "stdio" for s in vscode)
    for section, body in _blocks("json"):
        key = "servers" if section.startswith("VS Code") else "mcpServers"
        assert key in json.loads(body), f"{section}: VS Code uses 'servers', others 'mcpServers'"


def test_the_readme_shows_a_sandbox_and_a_read_only_posthog_configuration() -> None:
    readme = [s for s in SNIPPETS if s.where.startswith("README ")]
    sandbox = [s for s in readme if "--sandbox" in s.args]
    posthog = [s for s in readme if dict(s.env).get("POSTHOG_PERSONAL_API_KEY")]
    assert sandbox and all(not s.env for s in sandbox)
    assert posthog and all("--read-only" in s.args for s in posthog)
    assert all("mcpServers" in json.loads(body) for _, body in _blocks("json", README))


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.where)
def test_snippet_flags_and_env_configure_the_expected_tools(
    snippet: Snippet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process: the CLI's own parser and Settings; the subprocess test below starts it.
    flags = server_flags(snippet)
    env = dict(snippet.env)
    use_env(monkeypatch, **env)
    config = settings_from(parser().parse_args(flags))
    assert {t.name for t in listing_for(config).tools} == expected_tools(flags, env)


@pytest.mark.slow
@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.where)
async def test_snippet_starts_and_lists_tools(snippet: Snippet, tmp_path: Path) -> None:
    flags = server_flags(snippet)
    env = dict(snippet.env)
    argv = [*flags, *([] if "--sandbox" in flags else ["--sandbox"]), "--no-demo"]
    command, prefix = local_server()
    params = StdioServerParameters(
        command=command,
        args=[*prefix, *argv],
        env={**env, "POSTHOG_SANDBOX_DIR": str(tmp_path / "sandbox")},
        cwd=ROOT,
    )
    with anyio.fail_after(60):
        async with Client(params, mode="legacy") as client:
            tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == expected_tools(flags, env)
