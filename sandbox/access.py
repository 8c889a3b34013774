"""How a person (or a second program) reaches a running sandbox: the directory it keeps its
state in, the `access.json` there (its address and access token, 0600), and the one
environment its API serves.

The in-process sandbox (the MCP server's `--sandbox`, which talks to it without a network)
also listens on 127.0.0.1 (`listener.py`); the standalone sandbox writes its own address. Both
are reached this way by `posthog-warehouse-mcp sql` (`sql.py`) and curl. Standard library only:
reading an access file loads nothing else of the sandbox.
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

ACCESS_FILE = "access.json"
# Where the MCP server's in-process sandbox (`--sandbox`) keeps its state unless told otherwise.
IN_PROCESS_DIRECTORY = Path.home() / ".posthog-warehouse-mcp" / "sandbox"
# Where the standalone sandbox (CLI, app factory) keeps its state unless told otherwise.
STANDALONE_DIRECTORY = Path("sandbox-data")
# The sandbox has one project, PostHog's environment id "1" (or its "@current" alias).
ENVIRONMENT_ID = "1"
# The secret reference (`{"env": DEMO_SECRET}`) that stands for the demo database's password:
# the MCP server running the sandbox in-process defines it, bound to the demo's address.
DEMO_SECRET = "POSTHOG_SECRET_SANDBOX_DEMO"


@dataclass(frozen=True)
class Access:
    """Where a running sandbox answers, and the bearer token it wants (None: any)."""

    url: str
    token: str | None
    pid: int

    def write(self, directory: Path) -> Path:
        """Write the access file (owner-only) and return its path."""
        path = directory / ACCESS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out)
        path.chmod(0o600)
        return path

    @classmethod
    def read(cls, directory: Path) -> Access | None:
        """The access file of a sandbox directory, or None when no sandbox runs there."""
        try:
            data = json.loads((directory / ACCESS_FILE).read_text())
            access = cls(str(data["url"]), data.get("token"), int(data["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            os.kill(access.pid, 0)
        except ProcessLookupError:
            return None  # left by a sandbox that was killed
        except PermissionError:
            pass
        return access


def remove(directory: Path, pid: int) -> None:
    """Remove the access file if this process wrote it."""
    current = Access.read(directory)
    if current is not None and current.pid == pid:
        with suppress(OSError):
            (directory / ACCESS_FILE).unlink()
