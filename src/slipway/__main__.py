"""Run the CLI as `python -m slipway`."""

from slipway.cli import run

run()
