"""`python -m ingot.cli`: the `ingot` command."""

import sys

from ingot.cli import main

sys.exit(main())
