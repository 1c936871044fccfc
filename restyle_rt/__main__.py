"""``python -m restyle_rt``: the ``restyle-rt`` command (same arguments, same exit codes)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
