"""Drift: comparing what the service sees with what a version was trained on, and retraining."""
