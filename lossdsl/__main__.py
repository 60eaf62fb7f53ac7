"""``python -m lossdsl ...``: the same command line as the ``lossdsl`` script."""

import sys

from .cli import main

sys.exit(main())
