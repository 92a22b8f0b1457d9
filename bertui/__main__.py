"""``python -m bertui`` = the ``bertui`` command."""

import sys

from bertui.cli import main

sys.exit(main())
