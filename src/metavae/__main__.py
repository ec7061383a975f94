"""``python -m metavae …`` (and ``torchrun --nproc_per_node=N -m metavae train …``): the command line."""

import sys

from metavae.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
