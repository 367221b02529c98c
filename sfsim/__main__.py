"""``python -m sfsim``: the same as ``dispo-sync sim``."""

from __future__ import annotations

import sys

from sfsim.cli import run_sim_cli

if __name__ == "__main__":
    sys.exit(run_sim_cli())
