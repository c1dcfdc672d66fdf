"""The local supervisor's process: `python -I -m opsctl.backends.local RUN_DIR` (supervisor.py)."""

import sys

from opsctl.backends.local.supervisor import main

main(sys.argv[1:])
