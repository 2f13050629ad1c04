"""``python -m barknet``: the command-line entry points (see :mod:`barknet.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
