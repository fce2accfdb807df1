"""``python -m fxq ...`` runs the ``fxq`` command."""

import sys

from fxq.cli import main

sys.exit(main())
