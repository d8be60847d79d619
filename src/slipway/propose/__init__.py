"""Propose: a pull request's model, from its data to its report.

``contract`` and ``datasets`` check the data (``slipway validate``, ``lock``), ``training`` fits
and registers (``train``), ``evaluation`` measures, ``gate_rules`` holds one rule per gate and
``gate`` applies them to a candidate (``gate``), ``report`` renders the outputs (``report``)
and ``comment`` keeps the one sticky pull-request comment. Nothing here imports another flow.
"""
