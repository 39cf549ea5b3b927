"""`python -m aerun ...` (and `torchrun -m aerun ...`) is the `aerun` command."""

import sys

from aerun.cli import main

if __name__ == "__main__":
    sys.exit(main())
