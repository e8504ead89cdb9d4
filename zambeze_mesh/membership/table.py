"""The member table of one agent: members, O(1) random picks, the shuffled probe order."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from zambeze_mesh.membership.events import MemberState
from zambeze_mesh.membership.messages import ALIVE, Update
from zambeze_mesh.membership.status import GONE, MemberStatus


class Member:
    """One member's mutable state inside :class:`MemberTable`."""

    __slots__ = ("_update", "address", "incarnation", "name", "record", "state_change", "status")

    def __init__(
        self,
        name: str,
        address: str,
        incarnation: int,
        status: MemberStatus,
        record: Any,
        now: float,
    ) -> None:
        self.name = name
        self.address = address
        self.incarnation = incarnation
        self.status = status
        self.record = record
        self.state_change = now
        self._update: Update | None = None

    def as_update(self) -> Update:
        """This member's entry in a full-state sync (cached until :meth:`touch`)."""
        u = self._update
        if u is None:
            u = self._update = Update(
                self.status, self.name, self.incarnation, self.address, self.record
            )
        return u

    def touch(self) -> None:
        """Forget the cached sync entry after a change."""
        self._update = None

    def snapshot(self) -> MemberState:
        return MemberState(
            self.name, self.address, self.incarnation, self.status, self.record, self.state_change
        )


class MemberTable:
    """Members by name plus the indexes :class:`Swim` needs to stay O(1) per message."""

    def __init__(self, me: Member, rng: random.Random) -> None:
        self.me = me.name
        self.rng = rng
        self.members: dict[str, Member] = {me.name: me}
        self.names: list[str] = [me.name]
        self.name_idx: dict[str, int] = {me.name: 0}
        self.counts: dict[MemberStatus, int] = dict.fromkeys(MemberStatus, 0)
        self.counts[MemberStatus.ALIVE] = 1
        self.probe_list: list[str] = []
        self.probe_index = 0

    def set_status(self, m: Member, status: MemberStatus, now: float) -> None:
        """Change ``m``'s status, keeping the counters right."""
        self.counts[m.status] -= 1
        self.counts[status] += 1
        m.status = status
        m.state_change = now
        m._update = None

    def random(self, k: int, accept: Callable[[Member], bool], exclude: str = "") -> list[Member]:
        """Up to ``k`` distinct random members passing ``accept`` (memberlist kRandomNodes)."""
        names = self.names
        n = len(names)
        out: list[Member] = []
        if n <= 1 or k <= 0:
            return out
        seen: set[str] = {self.me, exclude}
        rnd = self.rng.random
        for _ in range(min(3 * n, max(16 * k, 64))):
            name = names[int(rnd() * n)]
            if name in seen:
                continue
            seen.add(name)
            m = self.members[name]
            if accept(m):
                out.append(m)
                if len(out) >= k:
                    break
        return out

    def add(self, u: Update, now: float) -> Member:
        """A new alive member from ``u``."""
        m = Member(u.name, u.address, u.incarnation, ALIVE, u.record, now)
        self.members[u.name] = m
        self.counts[ALIVE] += 1
        self.name_idx[u.name] = len(self.names)
        self.names.append(u.name)
        self.insert_probe(u.name)
        return m

    def insert_probe(self, name: str) -> None:
        """Put ``name`` at a random place of the probe order."""
        pl = self.probe_list
        pl.append(name)
        j = int(self.rng.random() * len(pl))
        pl[-1], pl[j] = pl[j], pl[-1]

    def remove(self, name: str) -> Member:
        """Forget ``name``."""
        m = self.members.pop(name)
        self.counts[m.status] -= 1
        i = self.name_idx.pop(name)
        last = self.names.pop()
        if last != name:
            self.names[i] = last
            self.name_idx[last] = i
        return m

    def next_probe_target(self) -> Member | None:
        """Next member to probe in the shuffled round-robin order (skips dead and left)."""
        members, me = self.members, self.me
        for _ in range(2 * len(self.probe_list) + 2):
            if self.probe_index >= len(self.probe_list):
                self.probe_list = [
                    n for n, m in members.items() if n != me and m.status not in GONE
                ]
                self.rng.shuffle(self.probe_list)
                self.probe_index = 0
                if not self.probe_list:
                    return None
            name = self.probe_list[self.probe_index]
            self.probe_index += 1
            m = members.get(name)
            if m is not None and name != me and m.status not in GONE:
                return m
        return None

    def state(self) -> tuple[Update, ...]:
        """Every member as an update: the payload of a push-pull sync."""
        return tuple([m._update or m.as_update() for m in self.members.values()])
