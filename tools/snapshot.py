"""Regenerate ``tools/tools.json``: ``python -m posthog_warehouse_mcp.tools.snapshot``.

Run it after changing a row, a model or a schema rule, and commit the result.
"""

from __future__ import annotations

import json

from .definitions import TOOLS_JSON, generate


def render() -> str:
    """``tools.json`` as it should be now: indented, keys sorted, so a diff reviews well."""
    return json.dumps(generate(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    """Write the file and say where."""
    TOOLS_JSON.write_text(render())
    print(f"wrote {TOOLS_JSON}")


if __name__ == "__main__":
    main()
