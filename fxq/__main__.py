"""``python -m fxq ...`` runs the ``fxq`` command."""

import sys

from fxq.cli import main

if __name__ == "__main__":  # not when a spawned worker process (fxq bench --fuzz --jobs) imports this module
    sys.exit(main())
