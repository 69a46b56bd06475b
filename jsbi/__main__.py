r"""``python -m jsbi``: the ``jsbi`` command line (:mod:`jsbi.cli`)."""

import sys

from jsbi.cli import main

if __name__ == "__main__":
    sys.exit(main())
