"""One Settings model: every setting's variable and flag, the README's table, and startup checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from posthog_warehouse_mcp.server.cli import parser, settings_from
from posthog_warehouse_mcp.server.config import ConfigError, Settings
from posthog_warehouse_mcp.tools.table import BY_NAME
from tests.support import SOURCE_ID, Recorder, connect, settings, text_of, use_env

ROOT = Path(__file__).resolve().parent.parent
# A Redis URL carries its password: it stays out of process lists too.
SECRETS = {"personal_api_key", "mcp_auth_token", "confirm_secret", "redis_url", "oauth_keys"}


def flags_of_fields() -> dict[str, str | None]:
    """Each Settings field's variable and its flag (None for the env-only secrets)."""
    flags = Settings.flags()
    return {Settings.variable(name): flags.get(name) for name in Settings.model_fields}


def test_only_the_secrets_have_no_flag() -> None:
    assert set(Settings.model_fields) - set(Settings.flags()) == SECRETS
    assert Settings.variable("mcp_auth_token") == "POSTHOG_MCP_AUTH_TOKEN"


def test_readme_configuration_table_is_the_settings_model() -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Configuration")
    section = text[start : text.index("\n## ", start)]
    rows = re.findall(
        r"^\| `(POSTHOG_[A-Z_]+)` \| (?:`(--[a-z-]+)`|\(env only\)) \|", section, re.M
    )
    assert {var: flag or None for var, flag in rows} == flags_of_fields()


def test_every_flag_is_in_the_help_with_its_variable() -> None:
    help_text = " ".join(parser().format_help().split())
    for variable, flag in flags_of_fields().items():
        if flag is not None:
            assert flag in help_text
            assert f"[{variable}]" in help_text


def test_http_settings_come_from_the_environment_and_flags_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_env(
        monkeypatch,
        POSTHOG_MCP_TRANSPORT="http",
        POSTHOG_MCP_PORT="9123",
        POSTHOG_MCP_ALLOWED_HOSTS="a.example:*, b.example",
        POSTHOG_MCP_AUTH_TOKEN="tok-123456",
        POSTHOG_LOG_LEVEL="debug",
    )
    from_env = settings_from(parser().parse_args([]))
    assert (from_env.mcp_transport, from_env.mcp_port) == ("http", 9123)
    assert from_env.mcp_allowed_hosts == ["a.example:*", "b.example"]
    assert from_env.auth_token == "tok-123456"
    assert from_env.log_level == "DEBUG"
    flagged = settings_from(parser().parse_args(["--port", "9200", "--transport", "sse"]))
    assert (flagged.mcp_transport, flagged.mcp_port) == ("sse", 9200)


def test_no_demo_and_boolean_flags_leave_the_environment_alone_when_absent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_env(monkeypatch, POSTHOG_READ_ONLY="1")
    assert settings_from(parser().parse_args([])).read_only is True
    assert settings_from(parser().parse_args(["--no-demo"])).demo is False
    assert settings_from(parser().parse_args([])).demo is True


OAUTH = {
    "mcp_transport": "http",
    "mcp_oauth": True,
    "mcp_public_url": "https://mcp.example.com",
    "personal_api_key": None,
}


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"mcp_transport": "http", "mcp_host": "0.0.0.0"}, "without authentication"),
        ({"mcp_transport": "sse", "mcp_host": "10.1.2.3"}, "without authentication"),
        ({"mcp_transport": "http", "forward_key": True}, "unset POSTHOG_PERSONAL_API_KEY"),
        ({"mcp_transport": "http", "redis_url": "redis://127.0.0.1/0"}, "POSTHOG_CONFIRM_SECRET"),
        ({"mcp_oauth": True}, "--transport http"),
        ({**OAUTH, "mcp_public_url": None}, "POSTHOG_MCP_PUBLIC_URL"),
        ({**OAUTH, "forward_key": True}, "unset --forward-key"),
        ({**OAUTH, "personal_api_key": "phx_server"}, "POSTHOG_PERSONAL_API_KEY"),
        (
            {**OAUTH, "redis_url": "redis://127.0.0.1/0", "confirm_secret": "s" * 32},
            "POSTHOG_OAUTH_KEYS",
        ),
        ({**OAUTH, "oauth_keys": "not-a-fernet-key"}, "must be Fernet keys"),
        (
            # Only separators: no key at all, so each replica would make its own.
            {
                **OAUTH,
                "redis_url": "redis://127.0.0.1/0",
                "confirm_secret": "s" * 32,
                "oauth_keys": " , ",
            },
            "POSTHOG_OAUTH_KEYS",
        ),
        ({**OAUTH, "mcp_public_url": "http://mcp.example.com"}, "must be https://"),
        ({**OAUTH, "oauth_host": "http://posthog.example.com"}, "must be https://"),
        ({"toolsets": ["nope"]}, "Unknown toolset"),
        ({"tools": ["nope"]}, "Unknown tool"),
    ],
)
def test_startup_refuses_what_cannot_work(overrides: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        settings(**overrides).check()


def test_a_public_http_bind_with_a_token_or_forwarded_keys_is_allowed() -> None:
    settings(**{**OAUTH, "mcp_host": "0.0.0.0"}).check()
    settings(mcp_transport="http", mcp_host="0.0.0.0", mcp_auth_token="t0k3n-long").check()
    settings(
        mcp_transport="http", mcp_host="0.0.0.0", forward_key=True, personal_api_key=None
    ).check()


@pytest.mark.anyio
async def test_a_missing_key_is_a_tool_error_even_with_an_injected_transport() -> None:
    recorder = Recorder()
    async with connect(recorder, personal_api_key=None) as client:
        result = await client.call_tool("external-data-sources-retrieve", {"id": SOURCE_ID})
    assert result.is_error is True
    assert "POSTHOG_PERSONAL_API_KEY" in text_of(result)
    assert "nothing was sent" in text_of(result)
    assert recorder.seen == []


@pytest.mark.anyio
async def test_the_sandbox_needs_no_key() -> None:
    recorder = Recorder()
    recorder.answer_as(BY_NAME["external-data-sources-list"])
    async with connect(recorder, personal_api_key=None, sandbox=True) as client:
        result = await client.call_tool("external-data-sources-list", {})
    assert result.is_error is False, text_of(result)
    assert recorder.seen[0].path == "/api/environments/1/external_data_sources/"
