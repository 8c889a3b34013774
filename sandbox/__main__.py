"""`python -m posthog_warehouse_mcp.sandbox ...`."""

import sys

from posthog_warehouse_mcp.sandbox.cli import main

raise SystemExit(main(sys.argv[1:]))
