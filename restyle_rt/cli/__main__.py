"""``python -m restyle_rt.cli``: the ``restyle-rt`` command, as ``python -m restyle_rt`` (tests and benchmark
scripts start it this way)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
