"""``python -m e6auth.cli``: the ``e6auth`` command."""

import sys

from e6auth.cli import main

sys.exit(main())
