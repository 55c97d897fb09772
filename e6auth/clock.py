"""Time as e6auth reads it: an injected callable returning POSIX seconds (``time.time``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

__all__ = ["Clock", "to_datetime"]

Clock = Callable[[], float]


def to_datetime(seconds: float) -> dt.datetime:
    """An aware UTC datetime, truncated to the second: stored times are exact to the second."""
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC)
