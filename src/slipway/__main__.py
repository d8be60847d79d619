"""Run the CLI as `python -m slipway`."""

import sys

from slipway.cli import main

sys.exit(main())
