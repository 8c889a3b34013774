"""The ``posthog-warehouse-mcp`` command: flags, logging, and which transport to serve."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import typing
from typing import Any

import anyio
from pydantic import ValidationError

from .. import __version__
from ..tools.redact import redact_text
from .app import create_server
from .config import ConfigError, Settings
from .state import open_client


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


def parser() -> argparse.ArgumentParser:
    """The command's flags, one per :class:`Settings` field that names one."""
    p = argparse.ArgumentParser(
        prog="posthog-warehouse-mcp",
        description="MCP server for PostHog data-warehouse sources, schemas and sync jobs. "
        "The API key is read from POSTHOG_PERSONAL_API_KEY only (never a flag, so it stays "
        "out of process lists). Run 'posthog-warehouse-mcp sandbox --help' for the sandbox, "
        "and 'posthog-warehouse-mcp sql --help' to query a running sandbox's warehouse.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for name, flag in Settings.flags().items():
        field = Settings.model_fields[name]
        # Unset flags stay None, so the environment (then the default) decides.
        help_text = f"{field.description} [{Settings.variable(name)}]"
        if field.annotation is bool:
            action = "store_false" if flag.startswith("--no-") else "store_true"
            p.add_argument(flag, dest=name, action=action, default=None, help=help_text)
            continue
        if typing.get_origin(field.annotation) is typing.Literal:
            # Settings validates (and upper-cases the log level); help lists the choices.
            help_text += f" (one of {', '.join(typing.get_args(field.annotation))})"
        metavar = flag.removeprefix("--").upper().replace("-", "_")
        p.add_argument(flag, dest=name, default=None, metavar=metavar, help=help_text)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the flags given, then the environment, then the defaults.

    Raises:
        pydantic.ValidationError: a value that does not fit its field.
    """
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    return Settings(**given)


async def _serve_stdio(settings: Settings) -> None:
    # The SDK's stdio, with malformed lines answered as JSON-RPC says rather than dropped.
    from .stdio import stdio_streams

    # The adapter (and the sandbox) outlive the session: they close after it has ended.
    async with open_client(settings) as client:
        server = create_server(settings, client=client)
        async with stdio_streams() as (read, write):
            await server.run(read, write, server.create_initialization_options())


async def _cancel_on_signal(signum: signal.Signals, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signum) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _run(settings: Settings) -> None:
    if settings.mcp_transport == "stdio":
        # SIGTERM (how hosts stop a server) cancels the session, as a closed stdin ends it. Left
        # to raise KeyboardInterrupt at whatever point the loop is at, it could leave anyio's
        # cancellation spinning at 100% CPU, once in a few dozen shutdowns.
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_on_signal, signal.SIGTERM, tg.cancel_scope)
            await _serve_stdio(settings)
            tg.cancel_scope.cancel()
        return
    from .transports import serve_http

    await serve_http(settings)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sql"]:
        from ..sandbox.sql import main as sql_main

        return sql_main(argv[1:])
    if argv[:1] == ["sandbox"]:
        try:
            from ..sandbox.cli import main as sandbox_main
        except ImportError:
            print(
                "The sandbox is not installed: pip install 'posthog-warehouse-mcp[sandbox]'",
                file=sys.stderr,
            )
            return 2
        return int(sandbox_main(argv[1:]))
    args = parser().parse_args(argv)
    # SIGTERM (how hosts and service managers stop a server) unwinds like Ctrl-C, so the
    # sandbox and its embedded PostgreSQL shut down instead of being left running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        settings = settings_from(args)
        setup_logging(settings.log_level)
        settings.check()
        anyio.run(_run, settings)
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
