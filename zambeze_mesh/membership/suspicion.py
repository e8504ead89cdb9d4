"""Lifeguard suspicion timers and local health awareness (memberlist suspicion.go, awareness.go)."""

from __future__ import annotations

import math


def remaining_suspicion_time(n: int, k: int, elapsed: float, lo: float, hi: float) -> float:
    """Time left before a suspicion with ``n`` of ``k`` confirmations expires.

    The timeout starts at ``hi`` and shrinks logarithmically towards ``lo`` as
    independent confirmations arrive.
    """
    frac = math.log(n + 1.0) / math.log(k + 1.0) if k > 0 else 1.0
    raw = hi - frac * (hi - lo)
    timeout = max(lo, math.floor(raw * 1000.0) / 1000.0)
    return timeout - elapsed


class Suspicion:
    """A pending suspicion of one member, accelerated by confirmations from others."""

    __slots__ = ("confirmations", "deadline", "hi", "incarnation", "k", "lo", "start")

    def __init__(
        self, now: float, source: str, incarnation: int, k: int, lo: float, hi: float
    ) -> None:
        self.start = now
        self.incarnation = incarnation
        self.k = k
        self.lo = lo
        self.hi = hi
        self.confirmations: set[str] = {source}
        self.deadline = now + (hi if k >= 1 else lo)

    @property
    def confirmed(self) -> int:
        """Independent confirmations beyond the first suspector."""
        return len(self.confirmations) - 1

    def confirm(self, source: str, now: float) -> bool:
        """Count a confirmation from ``source``; True if it was new and shortened the deadline."""
        if self.confirmed >= self.k or source in self.confirmations:
            return False
        self.confirmations.add(source)
        elapsed = now - self.start
        self.deadline = now + remaining_suspicion_time(
            self.confirmed, self.k, elapsed, self.lo, self.hi
        )
        return True


class Awareness:
    """Lifeguard local health multiplier: 0 is healthy; timeouts scale by (score + 1)."""

    __slots__ = ("max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        """Move the score by ``delta``, clamped to [0, max - 1]."""
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, timeout: float) -> float:
        """``timeout`` scaled by the current health."""
        return timeout * (self.score + 1)
