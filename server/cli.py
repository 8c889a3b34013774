"""The ``posthog-warehouse-mcp`` command: flags, logging, and which transport to serve."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from posthog_warehouse_mcp import __version__
from posthog_warehouse_mcp.server.app import create_server, open_client
from posthog_warehouse_mcp.server.config import ConfigError, Settings
from posthog_warehouse_mcp.tools.redact import redact_text
from posthog_warehouse_mcp.tools.table import TOOLSETS


class RedactingFilter(logging.Filter):
    """Scrub secrets from every log record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message with a redacted rendering."""
        record.msg = redact_text(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def setup_logging(level: str) -> None:
    """Log to stderr only: on stdio, stdout is the protocol."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO; our own debug line says the same, with less.
    logging.getLogger("httpx").setLevel(
        logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="posthog-warehouse-mcp",
        description="MCP server for PostHog data-warehouse sources, schemas and sync jobs. "
        "The API key is read from POSTHOG_PERSONAL_API_KEY only (never a flag, so it stays "
        "out of process lists). Run 'posthog-warehouse-mcp sandbox --help' for the sandbox.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--transport", choices=["stdio", "sse", "http"], default="stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--posthog-host", help="us, eu or a base URL [POSTHOG_HOST]")
    p.add_argument("--environment-id", help="PostHog environment id [POSTHOG_ENVIRONMENT_ID]")
    p.add_argument(
        "--path-prefix", choices=["environments", "projects"], help="[POSTHOG_PATH_PREFIX]"
    )
    p.add_argument("--timeout", type=float, help="seconds per request [POSTHOG_TIMEOUT]")
    p.add_argument(
        "--read-only",
        action="store_true",
        default=None,
        help="list and allow only read-only tools [POSTHOG_READ_ONLY]",
    )
    p.add_argument("--toolsets", help=f"comma list of {', '.join(TOOLSETS)} [POSTHOG_TOOLSETS]")
    p.add_argument("--tools", help="comma list of tool names to allow [POSTHOG_TOOLS]")
    p.add_argument(
        "--max-output-bytes", type=int, help="result budget in bytes [POSTHOG_MAX_OUTPUT_BYTES]"
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        default=None,
        help="run against an in-process local sandbox instead of PostHog [POSTHOG_SANDBOX]",
    )
    p.add_argument("--sandbox-dir", type=Path, help="sandbox data directory [POSTHOG_SANDBOX_DIR]")
    p.add_argument(
        "--no-demo",
        dest="demo",
        action="store_false",
        default=None,
        help="do not start the sandbox's demo Postgres",
    )
    p.add_argument("--stateless", action="store_true", help="stateless streamable HTTP")
    p.add_argument(
        "--forward-key",
        action="store_true",
        help="HTTP: use each caller's own 'Authorization: Bearer phx_...' for PostHog",
    )
    p.add_argument("--allowed-hosts", help="HTTP: comma list of allowed Host values")
    p.add_argument("--allowed-origins", help="HTTP: comma list of allowed Origin values")
    p.add_argument(
        "--log-level",
        default=os.environ.get("POSTHOG_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    return p


def _settings(args: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {
        "host": args.posthog_host,
        "environment_id": args.environment_id,
        "path_prefix": args.path_prefix,
        "timeout": args.timeout,
        "read_only": args.read_only,
        "toolsets": args.toolsets,
        "tools": args.tools,
        "max_output_bytes": args.max_output_bytes,
        "sandbox": args.sandbox,
        "sandbox_dir": args.sandbox_dir,
        "demo": args.demo,
        "forward_key": args.forward_key or None,
    }
    return Settings(**{k: v for k, v in given.items() if v is not None})


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


async def _run(settings: Settings, args: argparse.Namespace) -> None:
    async with open_client(settings) as client:
        server = create_server(settings, client=client)
        if args.transport == "stdio":
            from mcp.server.stdio import stdio_server

            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
            return
        # HTTP needs uvicorn and Starlette; stdio sessions never pay for importing them.
        from posthog_warehouse_mcp.server.transports import HttpOptions, http_app, serve_http

        options = HttpOptions(
            host=args.host,
            port=args.port,
            stateless=args.stateless,
            auth_token=os.environ.get("POSTHOG_MCP_AUTH_TOKEN") or None,
            forward_key=settings.forward_key,
            allowed_hosts=_split(args.allowed_hosts),
            allowed_origins=_split(args.allowed_origins),
        )
        if not options.is_loopback and not (options.auth_token or options.forward_key):
            raise ConfigError(
                f"Refusing to serve on {args.host} without authentication: set "
                "POSTHOG_MCP_AUTH_TOKEN (clients send it as a bearer token) or pass "
                "--forward-key (clients send their own PostHog key)."
            )
        if options.forward_key and settings.api_key:
            raise ConfigError(
                "--forward-key uses each caller's own key; unset POSTHOG_PERSONAL_API_KEY so "
                "no server-wide key can be used by someone else."
            )
        logging.getLogger("posthog_warehouse_mcp").info(
            "serving %s on http://%s:%d%s",
            args.transport,
            args.host,
            args.port,
            "/mcp" if args.transport == "http" else "/sse",
        )
        await serve_http(http_app(server, options, kind=args.transport), options)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sandbox"]:
        try:
            from posthog_warehouse_mcp.sandbox.cli import main as sandbox_main
        except ImportError:
            print(
                "The sandbox is not installed: pip install 'posthog-warehouse-mcp[sandbox]'",
                file=sys.stderr,
            )
            return 2
        return int(sandbox_main(argv[1:]))
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    # SIGTERM (how hosts and service managers stop a server) unwinds like Ctrl-C, so the
    # sandbox and its embedded PostgreSQL shut down instead of being left running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        settings = _settings(args)
        settings.check()
        anyio.run(_run, settings, args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        print(f"posthog-warehouse-mcp: invalid configuration: {problems}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"posthog-warehouse-mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
