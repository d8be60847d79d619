"""Slipway: ship machine-learning models through pull requests."""

__version__ = "0.1.0"
