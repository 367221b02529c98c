"""``python -m daemon``: the same as the ``dispo-sync`` console script."""

import sys

from daemon.cli import main

sys.exit(main())
