"""`python -m aerun ...` (and `torchrun -m aerun ...`) is the `aerun` command."""

from aerun.cli import console_main

if __name__ == "__main__":
    console_main()
