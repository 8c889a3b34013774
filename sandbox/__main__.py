"""`python -m sandbox ...`."""

import sys

from sandbox.cli import main

raise SystemExit(main(sys.argv[1:]))
