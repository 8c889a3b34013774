"""`python -m posthog_warehouse_mcp.sandbox ...`."""

import sys

from .cli import main

raise SystemExit(main(sys.argv[1:]))
