"""How long-running work reports progress: a callable taking one line of text."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]
