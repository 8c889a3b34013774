"""`sandbox --host 127.0.0.1 --port 8010 --dir DIR [--api-key KEY] [--allowed-hosts H,...]
[--no-demo] [--cloud-rules]`."""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import sys
from pathlib import Path

import uvicorn

from ..loopback.hosts import is_loopback, listener_hosts, url_host
from .access import STANDALONE_DIRECTORY
from .app import create_app
from .connect import CONNECT_PAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox",
        description="Serve a local PostHog-compatible data-warehouse API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=8010, help="port to listen on")
    parser.add_argument("--dir", type=Path, default=STANDALONE_DIRECTORY, help="state folder")
    parser.add_argument(
        "--api-key", default=None, help="require this bearer key (needed off loopback)"
    )
    parser.add_argument(
        "--allowed-hosts",
        default="",
        help="comma list of further Host values to answer (name:port), for a name or address "
        "other machines reach this one by; the bound address and localhost always are",
    )
    parser.add_argument("--no-demo", action="store_true", help="skip the demo database")
    parser.add_argument(
        "--cloud-rules",
        action="store_true",
        help="refuse new sources as PostHog Cloud does: non-public hosts, Postgres without TLS",
    )
    parser.add_argument("--log-level", default="info", help="log level (stderr)")
    return parser


def main(argv: list[str]) -> int:
    """Run the sandbox server until interrupted; return the exit code."""
    args = _parser().parse_args(argv)
    if not is_loopback(args.host) and not args.api_key:
        # Anyone who can reach the address could read, change and delete everything in it.
        print(
            "posthog-warehouse-mcp sandbox: Refusing to serve the sandbox on "
            f"{args.host} without --api-key: anyone who can reach that address could use it. "
            "Pass --api-key KEY (clients send it as a bearer token), or serve on 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    extra = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(
        args.dir,
        api_key=args.api_key,
        demo=not args.no_demo,
        cloud_rules=args.cloud_rules,
        advertise=f"http://{url_host(args.host)}:{args.port}",
        allowed_hosts=[*listener_hosts(args.port, args.host), *extra],
    )
    # uvicorn sends access logs to stdout by default; everything goes to stderr here.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for handler in log_config["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    logging.getLogger("uvicorn.access").addFilter(_HideConnectTokens())
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=log_config,
        lifespan="on",
    )
    # uvicorn re-raises Ctrl-C after its graceful shutdown; the sandbox has stopped cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
    return 0


class _HideConnectTokens(logging.Filter):
    """Access-log lines show a connect page's path without its one-time token."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        path = args[2] if isinstance(args, tuple) and len(args) >= 3 else None
        if isinstance(args, tuple) and isinstance(path, str):
            record.args = (*args[:2], CONNECT_PAGE.without_token(path), *args[3:])
        return True


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
