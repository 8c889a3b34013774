"""Every setting in one model: an environment variable each (``POSTHOG_*``), most with a flag.

A field's ``json_schema_extra={"flag": ...}`` names its command-line flag; the CLI builds its
parser from these fields (server/cli.py), so the README's configuration table is this model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..loopback.hosts import is_loopback
from ..tools.output import DEFAULT_MAX_OUTPUT_BYTES
from ..tools.secrets import SecretPolicy
from ..tools.table import BY_NAME, ENDPOINTS, TOOLSETS
from ..tools.waiting import DEFAULT_WAIT_CAP

HOST_SHORTCUTS = {"us": "https://us.posthog.com", "eu": "https://eu.posthog.com"}
# PostHog's region-agnostic OAuth server: a person of either Cloud region signs in there.
OAUTH_PROXY = "https://oauth.posthog.com"
SANDBOX_BASE_URL = "http://sandbox"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

Transport = Literal["stdio", "sse", "http"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ConfigError(ValueError):
    """A setting is wrong; the message says which and how to fix it."""


def flagged(default: Any, flag: str, description: str, **constraints: Any) -> Any:
    """A field with a command-line ``flag``: the CLI builds its parser from these."""
    return Field(default, description=description, json_schema_extra={"flag": flag}, **constraints)


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
    host: str = flagged("https://us.posthog.com", "--posthog-host", "us, eu, or a base URL")
    environment_id: str | None = flagged(
        None, "--environment-id", "PostHog environment id (the number in your PostHog URL)"
    )
    path_prefix: Literal["environments", "projects"] = flagged(
        "environments", "--path-prefix", "API path prefix"
    )
    timeout: float = flagged(30.0, "--timeout", "seconds per request", gt=0, le=600)

    # Which tools are offered, and how much a result may say.
    read_only: bool = flagged(
        False, "--read-only", "list and allow only the tools a read-scoped key can call"
    )
    toolsets: CommaList = flagged([], "--toolsets", f"comma list of {', '.join(TOOLSETS)}")
    tools: CommaList = flagged([], "--tools", "comma list of tool names to allow")
    max_output_bytes: int = flagged(
        DEFAULT_MAX_OUTPUT_BYTES, "--max-output-bytes", "result budget in bytes", ge=2_000
    )

    # The local sandbox.
    sandbox: bool = flagged(
        False, "--sandbox", "run against an in-process local sandbox instead of PostHog"
    )
    sandbox_dir: Path | None = flagged(None, "--sandbox-dir", "sandbox data directory")
    demo: bool = flagged(True, "--no-demo", "start the sandbox's demo Postgres (--no-demo: don't)")
    sandbox_cloud_rules: bool = flagged(
        False,
        "--sandbox-cloud-rules",
        "the sandbox refuses new sources as PostHog Cloud does (public host, Postgres TLS)",
    )

    # Waiting for syncs.
    wait_cap_seconds: float = flagged(
        DEFAULT_WAIT_CAP,
        "--wait-cap",
        "longest a call waits for syncs (keep it below the client's tool-call timeout)",
        gt=0,
        le=600,
    )

    # Destructive calls.
    confirm: Literal["human", "token", "off"] = flagged(
        "human",
        "--confirm",
        "before destroy, delete-data, resync, delete-webhook, repair-cdc, apply-plan and settings "
        "changes that remove synced data act: human (the person answers in a form, a card or a "
        "one-time page on 127.0.0.1; a token only where the client offers none), token (the "
        "model brings back a token the person agreed to), off (act at once: unattended "
        "automation)",
    )
    confirm_secret: SecretStr | None = Field(
        None, description="HTTP: key signing confirmation tokens, shared by every instance"
    )
    state_dir: Path = flagged(
        Path("~/.posthog-warehouse-mcp"),
        "--state-dir",
        "where the server keeps what must outlive it (the confirmation tokens already used)",
    )

    # Credentials in calls.
    secret_refs: Literal["auto", "on", "off"] = flagged(
        "auto",
        "--secret-refs",
        'resolve {"env": "POSTHOG_SECRET_<NAME>"} in source credentials (auto: on for stdio, '
        "off for HTTP)",
    )
    strict_secrets: bool = flagged(
        False,
        "--strict-secrets",
        "refuse literal values in credential fields (pass references or use the connect link)",
    )

    # Serving.
    mcp_transport: Transport = flagged(
        "stdio", "--transport", "stdio, sse (/sse) or http (streamable HTTP at /mcp)"
    )
    mcp_host: str = flagged("127.0.0.1", "--host", "HTTP bind address")
    mcp_port: int = flagged(8000, "--port", "HTTP port", ge=0, le=65535)
    mcp_stateless: bool = flagged(
        False, "--stateless", "stateless streamable HTTP (JSON answers, no sessions)"
    )
    mcp_session_idle_timeout: float = flagged(
        600.0,
        "--session-idle-timeout",
        "streamable HTTP: seconds a session may stay idle before it is closed",
        gt=0,
        le=86_400,
    )
    mcp_max_sessions: int = flagged(
        200,
        "--max-sessions",
        "streamable HTTP: sessions open at once; past it a new one is refused (503)",
        ge=1,
        le=100_000,
    )
    mcp_auth_token: SecretStr | None = Field(
        None, description="HTTP: the bearer token clients must send"
    )
    forward_key: bool = flagged(
        False, "--forward-key", "HTTP: use each caller's own 'Authorization: Bearer phx_...'"
    )
    redis_url: SecretStr | None = Field(
        None,
        description="HTTP replicas: the Redis every instance shares (redis://, rediss:// or "
        "unix://): spent confirmation tokens and plan ids, rate-limit counts",
    )
    mcp_rate_limit_per_minute: int = flagged(
        1_500,
        "--rate-limit-per-minute",
        "HTTP: requests one caller (its bearer token) may make in a minute; 0: no limit",
        ge=0,
    )
    mcp_rate_limit_per_hour: int = flagged(
        15_000,
        "--rate-limit-per-hour",
        "HTTP: requests one caller may make in an hour; 0: no limit",
        ge=0,
    )
    mcp_public_url: str | None = flagged(
        None,
        "--public-url",
        "HTTP: the base URL browsers reach this deployment at (https://mcp.example.com); "
        "approval pages are served there, for clients with neither forms nor cards",
    )
    mcp_oauth: bool = flagged(
        False,
        "--oauth",
        "HTTP: callers sign in with PostHog (OAuth); the server keeps each person's PostHog "
        "token and calls PostHog as them (needs --public-url)",
    )
    oauth_host: str | None = flagged(
        None,
        "--oauth-host",
        "with --oauth: PostHog's OAuth server (us, eu, oauth for https://oauth.posthog.com, "
        "or a URL); default: the PostHog host",
    )
    oauth_keys: SecretStr | None = Field(
        None,
        description="with --oauth: comma list of keys (Fernet, newest first) encrypting the "
        "PostHog tokens the server keeps; older keys still decrypt (rotation). The same on "
        "every replica",
    )
    mcp_oauth_token_seconds: int = flagged(
        3600,
        "--oauth-token-seconds",
        "with --oauth: seconds an access token this server issues to an MCP client lasts",
        ge=60,
        le=86_400,
    )
    mcp_allowed_hosts: CommaList = flagged(
        [], "--allowed-hosts", "HTTP: comma list of allowed Host values"
    )
    mcp_allowed_origins: CommaList = flagged(
        [], "--allowed-origins", "HTTP: comma list of allowed Origin values"
    )
    log_level: LogLevel = flagged("INFO", "--log-level", "log level (logs go to stderr)")

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

    @field_validator("oauth_host")
    @classmethod
    def _oauth_host(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        value = {**HOST_SHORTCUTS, "oauth": OAUTH_PROXY}.get(value.lower(), value).rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be us, eu, oauth, or a URL starting with https://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("mcp_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be a URL starting with https:// (or http://)")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(
                "must be the deployment's base URL (scheme, host and port), without a path"
            )
        netloc = parts.netloc.lower()
        # A browser leaves a default port out of its Host and Origin headers.
        default = {"https": ":443", "http": ":80"}[parts.scheme]
        return f"{parts.scheme}://{netloc.removesuffix(default)}"

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

    @classmethod
    def flags(cls) -> dict[str, str]:
        """Each flagged field's command-line flag, by field name (the secrets have none)."""
        found: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra
            flag = extra.get("flag") if isinstance(extra, dict) else None
            if isinstance(flag, str):
                found[name] = flag
        return found

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable a field is read from."""
        return f"{cls.model_config.get('env_prefix', '')}{name}".upper()

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
            if self.mcp_oauth:
                raise ConfigError(
                    "--oauth signs people in to a server they reach over HTTP; use "
                    "--transport http (stdio runs as the person who starts it)."
                )
            return
        if not self.is_loopback and not (self.auth_token or self.forward_key or self.mcp_oauth):
            raise ConfigError(
                f"Refusing to serve on {self.mcp_host} without authentication: pass --oauth "
                "(callers sign in with PostHog), set POSTHOG_MCP_AUTH_TOKEN (clients send it as "
                "a bearer token) or pass --forward-key (clients send their own PostHog key)."
            )
        if self.mcp_oauth:
            self._check_oauth()
        if self.redis_url and not self.confirm_secret:
            raise ConfigError(
                "POSTHOG_REDIS_URL shares the used confirmation tokens and plan ids between "
                "instances; they must also verify each other's tokens: set the same "
                "POSTHOG_CONFIRM_SECRET on every instance."
            )
        if self.forward_key and self.api_key:
            raise ConfigError(
                "--forward-key uses each caller's own key; unset POSTHOG_PERSONAL_API_KEY so "
                "no server-wide key can be used by someone else."
            )

    def _check_oauth(self) -> None:
        if self.mcp_public_url is None:
            raise ConfigError(
                "--oauth needs POSTHOG_MCP_PUBLIC_URL (--public-url): the URL MCP clients and "
                "browsers reach this deployment at, which names its tokens' audience."
            )
        if self.forward_key or self.auth_token or self.api_key:
            raise ConfigError(
                "--oauth calls PostHog as each signed-in person; unset --forward-key, "
                "POSTHOG_MCP_AUTH_TOKEN and POSTHOG_PERSONAL_API_KEY."
            )
        for name, url in (
            ("POSTHOG_MCP_PUBLIC_URL", self.mcp_public_url),
            ("PostHog's OAuth server (--oauth-host, else --posthog-host)", self.oauth_server),
        ):
            parts = urlsplit(url)
            if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
                raise ConfigError(
                    f"--oauth sends sign-in codes and tokens through {name}; it must be "
                    f"https:// (plain http:// only on a loopback address), not {url}."
                )
        if self.redis_url and not self.oauth_key_list:
            raise ConfigError(
                "--oauth with POSTHOG_REDIS_URL keeps each person's PostHog token in Redis, "
                "encrypted: set the same POSTHOG_OAUTH_KEYS on every instance (make one with "
                "python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')."
            )
        if self.oauth_keys:
            try:
                from cryptography.fernet import Fernet
            except ImportError:
                raise ConfigError(
                    "--oauth needs the cryptography package: pip install "
                    "'posthog-warehouse-mcp[hosted]'"
                ) from None
            for key in self.oauth_key_list:
                try:
                    Fernet(key)
                except ValueError:
                    raise ConfigError(
                        "POSTHOG_OAUTH_KEYS must be Fernet keys (32 url-safe base64-encoded "
                        "bytes each), separated by commas."
                    ) from None

    @property
    def oauth_key_list(self) -> list[str]:
        """The token encryption keys, newest first (plain text, for the cipher only)."""
        if self.oauth_keys is None:
            return []
        return [k.strip() for k in self.oauth_keys.get_secret_value().split(",") if k.strip()]

    @property
    def oauth_server(self) -> str:
        """PostHog's OAuth server: the setting, or the PostHog host."""
        return self.oauth_host or self.host

    @property
    def secret_policy(self) -> SecretPolicy:
        """How credential fields of a call are treated: references resolve on stdio by default
        (the user's own machine), on the HTTP transports only when the operator says so."""
        references = self.secret_refs == "on" or (
            self.secret_refs == "auto" and self.mcp_transport == "stdio"
        )
        return SecretPolicy(references=references, strict=self.strict_secrets)

    @property
    def api_key(self) -> str | None:
        """The key as plain text, for the Authorization header only."""
        return self.personal_api_key.get_secret_value() if self.personal_api_key else None

    @property
    def auth_token(self) -> str | None:
        """The HTTP bearer token as plain text, for comparing with what a client sends."""
        return self.mcp_auth_token.get_secret_value() if self.mcp_auth_token else None

    @property
    def redis(self) -> str | None:
        """The Redis URL as plain text, for connecting only."""
        return self.redis_url.get_secret_value() if self.redis_url else None

    @property
    def public_url(self) -> str | None:
        """Where browsers reach this deployment's approval page: the public URL, over HTTP
        only (stdio serves its page on 127.0.0.1)."""
        return self.mcp_public_url if self.mcp_transport != "stdio" else None

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
        """The environment id in use (the sandbox's one environment, or the configured one)."""
        if not self.sandbox:
            return self.environment_id
        # The sandbox states its id; the server imports the sandbox only when it runs one.
        from ..sandbox.access import ENVIRONMENT_ID

        return ENVIRONMENT_ID

    @property
    def needs_key(self) -> bool:
        """Whether calls need a server-wide PostHog key (not the sandbox, not forwarding)."""
        return not (self.sandbox or self.forward_key or self.mcp_oauth)

    def base_path(self) -> str:
        """``/api/{prefix}/{environment_id}/`` for the configured environment."""
        return f"/api/{self.path_prefix}/{self.environment}/"
