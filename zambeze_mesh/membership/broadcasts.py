"""Transmit-limited broadcast queue (memberlist TransmitLimitedQueue).

One pending update per member: a newer update about a member replaces the
older one. Updates sent the fewest times go first (newest first among equals);
an update is dropped after ``limit`` transmissions. Taking ``k`` updates costs
O(k), independent of the queue length.
"""

from __future__ import annotations

from itertools import islice

from zambeze_mesh.membership.messages import Update


class BroadcastQueue:
    """Pending updates bucketed by how many times each was transmitted."""

    __slots__ = ("_buckets", "_tx")

    def __init__(self) -> None:
        self._buckets: list[dict[str, Update]] = [{}]
        self._tx: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._tx)

    def push(self, update: Update) -> None:
        """Queue ``update``, replacing any pending update about the same member."""
        name = update.name
        old = self._tx.get(name)
        if old is not None:
            del self._buckets[old][name]
        self._tx[name] = 0
        self._buckets[0][name] = update

    def pending(self, name: str) -> Update | None:
        """The update queued about ``name``, if any."""
        t = self._tx.get(name)
        return None if t is None else self._buckets[t][name]

    def take(self, max_count: int, limit: int) -> list[Update]:
        """Up to ``max_count`` updates to send now; each counts as one transmission."""
        if not self._tx or max_count <= 0:
            return []
        chosen: list[tuple[int, str]] = []
        for t, bucket in enumerate(self._buckets):
            if not bucket:
                continue
            if t >= limit:
                for name in bucket:
                    del self._tx[name]
                bucket.clear()
                continue
            need = max_count - len(chosen)
            chosen.extend((t, name) for name in islice(reversed(bucket), need))
            if len(chosen) >= max_count:
                break
        out: list[Update] = []
        buckets = self._buckets
        for t, name in chosen:
            update = buckets[t].pop(name)
            out.append(update)
            nt = t + 1
            if nt >= limit:
                del self._tx[name]
                continue
            if nt == len(buckets):
                buckets.append({})
            buckets[nt][name] = update
            self._tx[name] = nt
        return out

    def clear(self) -> None:
        """Drop everything."""
        for bucket in self._buckets:
            bucket.clear()
        self._tx.clear()
