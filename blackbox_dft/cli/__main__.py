"""``python -m blackbox_dft.cli``: the command line."""

import sys

from blackbox_dft.cli.main import main

sys.exit(main())
