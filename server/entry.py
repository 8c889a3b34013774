"""The console entry point: loads the server with the garbage collector out of the way.

Importing the SDK, pydantic and the tool models allocates many long-lived objects; collecting
while they load only slows the start (about 50 ms of the time to answer tools/list). They are
frozen once loaded, so later collections skip them too.
"""

from __future__ import annotations

import gc


def main(argv: list[str] | None = None) -> int:
    """Run the ``posthog-warehouse-mcp`` command; returns the exit code."""
    gc.disable()
    try:
        from .cli import main as cli_main
    finally:
        gc.freeze()
        gc.enable()
    return cli_main(argv)
