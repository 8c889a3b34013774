"""Configuration from the environment (``POSTHOG_*``) and matching CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from posthog_warehouse_mcp.tools.table import BY_NAME, ENDPOINTS, TOOLSETS, Endpoint

HOST_SHORTCUTS = {"us": "https://us.posthog.com", "eu": "https://eu.posthog.com"}
SANDBOX_BASE_URL = "http://sandbox"
SANDBOX_ENVIRONMENT_ID = "1"


class ConfigError(ValueError):
    """A setting is wrong; the message says which and how to fix it."""


def bearer(headers: Any) -> str | None:
    """The bearer token of an ``Authorization`` header, if any."""
    value = headers.get("authorization") if headers is not None else None
    if not value or not value.lower().startswith("bearer "):
        return None
    token = str(value[7:].strip())
    return token or None


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything the server needs to know; each field has an env var and a CLI flag."""

    model_config = SettingsConfigDict(env_prefix="POSTHOG_", extra="ignore")

    personal_api_key: SecretStr | None = Field(
        None, description="Personal API key (phx_...) with external_data_source scopes."
    )
    host: str = Field("https://us.posthog.com", description="us, eu, or any base URL.")
    environment_id: str | None = Field(None, description="Environment (project) id.")
    path_prefix: Literal["environments", "projects"] = "environments"
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds per request.")
    read_only: bool = False
    toolsets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    tools: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_output_bytes: int = Field(80_000, ge=2_000)
    sandbox: bool = False
    sandbox_dir: Path | None = None
    demo: bool = True
    forward_key: bool = False

    _split_toolsets = field_validator("toolsets", "tools", mode="before")(_split)

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

    def check(self) -> None:
        """Reject unknown toolset or tool names at startup.

        Raises:
            ConfigError: naming the unknown values and the valid ones.
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

    @property
    def api_key(self) -> str | None:
        """The key as plain text, for the Authorization header only."""
        return self.personal_api_key.get_secret_value() if self.personal_api_key else None

    @property
    def base_url(self) -> str:
        """Where requests go: the sandbox in-process, or the PostHog host."""
        return SANDBOX_BASE_URL if self.sandbox else self.host

    @property
    def environment(self) -> str | None:
        """The environment id in use (the sandbox always has ``1``)."""
        return SANDBOX_ENVIRONMENT_ID if self.sandbox else self.environment_id

    def base_path(self) -> str:
        """``/api/{prefix}/{environment_id}/`` for the configured environment."""
        return f"/api/{self.path_prefix}/{self.environment}/"

    def enabled(self, row: Endpoint) -> bool:
        """Whether a tool is listed and callable under read-only, toolsets and tools filters."""
        if self.read_only and not row.is_read_only:
            return False
        if self.tools and not {row.name, *row.aliases} & set(self.tools):
            return False
        return not (self.toolsets and row.toolset not in self.toolsets)

    def why_disabled(self, row: Endpoint) -> str:
        """Explain to the model why a tool is refused and how the user can allow it."""
        if self.read_only and not row.is_read_only:
            return (
                f"{row.name} changes data and the server runs read-only; nothing was sent. Ask "
                "the user to restart it without --read-only (POSTHOG_READ_ONLY=0) to allow it."
            )
        return (
            f"{row.name} is not enabled on this server (--tools/--toolsets); nothing was sent. "
            f"It belongs to the toolset '{row.toolset}'."
        )
