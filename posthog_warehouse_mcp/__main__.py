"""``python -m posthog_warehouse_mcp``: same as the ``posthog-warehouse-mcp`` command."""

import sys

from .server.entry import main

sys.exit(main())
