"""Promote: moving a model version between environments by merging manifest changes.

Promotion checks, deploy, rollback and history live here; it may use :mod:`slipway.serve`.
The manifests themselves are read by the service too, so they are shared:
:mod:`slipway.manifests`.
"""
