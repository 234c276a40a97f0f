"""``python -m privmed`` is the same as the ``privmed`` command."""

import sys

from privmed.cli import main

if __name__ == "__main__":  # not when a --nproc worker process (spawn) imports this module as __mp_main__
    sys.exit(main())
