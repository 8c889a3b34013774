"""``python -m posthog_warehouse_mcp.server``: same as the ``posthog-warehouse-mcp`` command."""

import sys

from .entry import main

sys.exit(main())
