"""``python -m privmed`` is the same as the ``privmed`` command."""

import sys

from privmed.cli import main

sys.exit(main())
