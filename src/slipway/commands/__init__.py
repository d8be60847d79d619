"""The ``slipway`` verbs, by flow; :mod:`slipway.cli` dispatches to them."""
