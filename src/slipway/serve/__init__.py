"""Serve: a model version as a running service.

``packaging`` builds the Bento (``slipway package``), ``server`` starts and stops an
environment's server (``serve``), ``service`` is what the BentoML service runs (request schema,
routing, answers), ``prediction_log`` writes what it answered and ``smoke`` checks a running
service (``smoke``). The Bento bundles ``service``, ``prediction_log`` and the shared modules
they import, nothing else.
"""
