"""Every setting in one model: an environment variable each (``POSTHOG_*``), most with a flag.

A field's ``json_schema_extra={"flag": ...}`` names its command-line flag; the CLI builds its
parser from these fields (server/cli.py), so the README's configuration table is this model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from posthog_warehouse_mcp.tools.output import DEFAULT_MAX_OUTPUT_BYTES
from posthog_warehouse_mcp.tools.table import BY_NAME, ENDPOINTS, TOOLSETS

HOST_SHORTCUTS = {"us": "https://us.posthog.com", "eu": "https://eu.posthog.com"}
SANDBOX_BASE_URL = "http://sandbox"
SANDBOX_ENVIRONMENT_ID = "1"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

Transport = Literal["stdio", "sse", "http"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ConfigError(ValueError):
    """A setting is wrong; the message says which and how to fix it."""


def _flag(name: str) -> dict[str, Any]:
    return {"flag": name}


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Everything the server needs to know; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="POSTHOG_", extra="ignore")

    # PostHog. The key has no flag, so it never shows in a process list.
    personal_api_key: SecretStr | None = Field(
        None, description="personal API key (phx_...) with external_data_source scopes"
    )
    host: str = Field(
        "https://us.posthog.com",
        description="us, eu, or a base URL",
        json_schema_extra=_flag("--posthog-host"),
    )
    environment_id: str | None = Field(
        None,
        description="PostHog environment id (the number in your PostHog URL)",
        json_schema_extra=_flag("--environment-id"),
    )
    path_prefix: Literal["environments", "projects"] = Field(
        "environments",
        description="API path prefix",
        json_schema_extra=_flag("--path-prefix"),
    )
    timeout: float = Field(
        30.0, gt=0, le=600, description="seconds per request", json_schema_extra=_flag("--timeout")
    )

    # Which tools are offered, and how much a result may say.
    read_only: bool = Field(
        False,
        description="list and allow only read-only tools",
        json_schema_extra=_flag("--read-only"),
    )
    toolsets: CommaList = Field(
        default_factory=list,
        description=f"comma list of {', '.join(TOOLSETS)}",
        json_schema_extra=_flag("--toolsets"),
    )
    tools: CommaList = Field(
        default_factory=list,
        description="comma list of tool names to allow",
        json_schema_extra=_flag("--tools"),
    )
    max_output_bytes: int = Field(
        DEFAULT_MAX_OUTPUT_BYTES,
        ge=2_000,
        description="result budget in bytes",
        json_schema_extra=_flag("--max-output-bytes"),
    )

    # The local sandbox.
    sandbox: bool = Field(
        False,
        description="run against an in-process local sandbox instead of PostHog",
        json_schema_extra=_flag("--sandbox"),
    )
    sandbox_dir: Path | None = Field(
        None, description="sandbox data directory", json_schema_extra=_flag("--sandbox-dir")
    )
    demo: bool = Field(
        True,
        description="start the sandbox's demo Postgres (--no-demo: don't)",
        json_schema_extra=_flag("--no-demo"),
    )

    # Serving.
    mcp_transport: Transport = Field(
        "stdio",
        description="stdio, sse (/sse) or http (streamable HTTP at /mcp)",
        json_schema_extra=_flag("--transport"),
    )
    mcp_host: str = Field(
        "127.0.0.1", description="HTTP bind address", json_schema_extra=_flag("--host")
    )
    mcp_port: int = Field(
        8000, ge=0, le=65535, description="HTTP port", json_schema_extra=_flag("--port")
    )
    mcp_stateless: bool = Field(
        False,
        description="stateless streamable HTTP (JSON answers, no sessions)",
        json_schema_extra=_flag("--stateless"),
    )
    mcp_auth_token: SecretStr | None = Field(
        None, description="HTTP: the bearer token clients must send"
    )
    forward_key: bool = Field(
        False,
        description="HTTP: use each caller's own 'Authorization: Bearer phx_...' for PostHog",
        json_schema_extra=_flag("--forward-key"),
    )
    mcp_allowed_hosts: CommaList = Field(
        default_factory=list,
        description="HTTP: comma list of allowed Host values",
        json_schema_extra=_flag("--allowed-hosts"),
    )
    mcp_allowed_origins: CommaList = Field(
        default_factory=list,
        description="HTTP: comma list of allowed Origin values",
        json_schema_extra=_flag("--allowed-origins"),
    )
    log_level: LogLevel = Field(
        "INFO", description="log level (logs go to stderr)", json_schema_extra=_flag("--log-level")
    )

    _split_lists = field_validator(
        "toolsets", "tools", "mcp_allowed_hosts", "mcp_allowed_origins", mode="before"
    )(_split)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            return "https://us.posthog.com"
        value = HOST_SHORTCUTS.get(value.strip().lower(), value.strip()).rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be us, eu, or a URL starting with http:// or https://")
        return value

    @field_validator("environment_id")
    @classmethod
    def _environment(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if value != "@current" and not value.isdigit():
            raise ValueError("must be a numeric environment id (from the PostHog URL)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def check(self) -> None:
        """Reject what cannot work, at startup.

        Raises:
            ConfigError: unknown toolset or tool names (naming the valid ones), or an HTTP
                server that anyone could use with this server's key.
        """
        unknown = [t for t in self.toolsets if t not in TOOLSETS]
        if unknown:
            raise ConfigError(
                f"Unknown toolset(s): {', '.join(unknown)}. Valid: {', '.join(TOOLSETS)}."
            )
        unknown = [t for t in self.tools if t not in BY_NAME]
        if unknown:
            raise ConfigError(
                f"Unknown tool(s): {', '.join(unknown)}. Valid: "
                + ", ".join(row.name for row in ENDPOINTS)
                + "."
            )
        if self.mcp_transport == "stdio":
            return
        if not self.is_loopback and not (self.auth_token or self.forward_key):
            raise ConfigError(
                f"Refusing to serve on {self.mcp_host} without authentication: set "
                "POSTHOG_MCP_AUTH_TOKEN (clients send it as a bearer token) or pass "
                "--forward-key (clients send their own PostHog key)."
            )
        if self.forward_key and self.api_key:
            raise ConfigError(
                "--forward-key uses each caller's own key; unset POSTHOG_PERSONAL_API_KEY so "
                "no server-wide key can be used by someone else."
            )

    @property
    def api_key(self) -> str | None:
        """The key as plain text, for the Authorization header only."""
        return self.personal_api_key.get_secret_value() if self.personal_api_key else None

    @property
    def auth_token(self) -> str | None:
        """The HTTP bearer token as plain text, for comparing with what a client sends."""
        return self.mcp_auth_token.get_secret_value() if self.mcp_auth_token else None

    @property
    def is_loopback(self) -> bool:
        """Whether the HTTP transports listen where only this machine can connect."""
        return self.mcp_host in LOOPBACK

    @property
    def base_url(self) -> str:
        """Where requests go: the sandbox in-process, or the PostHog host."""
        return SANDBOX_BASE_URL if self.sandbox else self.host

    @property
    def environment(self) -> str | None:
        """The environment id in use (the sandbox always has ``1``)."""
        return SANDBOX_ENVIRONMENT_ID if self.sandbox else self.environment_id

    @property
    def needs_key(self) -> bool:
        """Whether calls need a server-wide PostHog key (not the sandbox, not forwarding)."""
        return not (self.sandbox or self.forward_key)

    def base_path(self) -> str:
        """``/api/{prefix}/{environment_id}/`` for the configured environment."""
        return f"/api/{self.path_prefix}/{self.environment}/"
