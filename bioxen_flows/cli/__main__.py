"""`python -m bioxen_flows.cli` is the same as `bioxen`."""

import sys

from bioxen_flows.cli import main

sys.exit(main())
