"""The time services read, injected so tests can move it by hand.

Services that measure intervals or stamp records take a :class:`Clock` instead of
calling :mod:`time` directly; the composition root passes a :class:`SystemClock`, and
tests pass a :class:`ManualClock` and advance it (no patching of ``time.monotonic``).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Monotonic time for intervals and wall-clock time for timestamps, in seconds."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences are meaningful)."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    """The real clocks (:func:`time.monotonic` and :func:`time.time`)."""

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()

    def time(self) -> float:
        """:func:`time.time`."""
        return time.time()


class ManualClock:
    """A clock that moves only when told to (for tests)."""

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._mono = monotonic
        self._wall = wall

    def monotonic(self) -> float:
        """The current monotonic reading."""
        return self._mono

    def time(self) -> float:
        """The current wall-clock reading."""
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never back)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._mono += seconds
        self._wall += seconds


#: The process-wide real clock (stateless; share it freely).
SYSTEM_CLOCK: Clock = SystemClock()
