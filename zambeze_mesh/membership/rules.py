"""How incoming membership updates change the view (memberlist aliveNode/suspectNode/deadNode).

A mixin of :class:`~zambeze_mesh.membership.swim.Swim`, kept apart so each
module stays small; it relies on the attributes and helpers declared below.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from zambeze_mesh.membership.broadcasts import BroadcastQueue
from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.messages import ALIVE, DEAD, LEFT, SUSPECT, Update
from zambeze_mesh.membership.status import GONE, MemberStatus
from zambeze_mesh.membership.suspicion import Suspicion
from zambeze_mesh.membership.table import Member, MemberTable

#: Updates claiming a higher incarnation are dropped. Incarnations only grow by one per
#: refutation, so no honest member gets near it; a hostile accusation near 2**64 would
#: otherwise force a refutation whose number no longer fits the wire's uint64.
MAX_INCARNATION = 2**48


class UpdateRules:
    """Apply alive/suspect/dead/left updates with incarnation precedence and refutation.

    Deaths are bounded by what the subject signed: a member's incarnation in this view
    only ever comes from its own alive/left records (which ``accept`` verifies), and a
    SUSPECT or DEAD claim about another member at a higher incarnation than that is
    dropped, since no honest peer can have seen it. A claim about ourselves is refuted
    one above our own incarnation, never at the accuser's number, so an accusation
    cannot push our incarnation anywhere; a higher incarnation of ours is believed only
    from a record we signed (after a restart that lost the stored one).
    """

    name: str
    config: Config
    _now: float
    _inc: int
    _record: object
    _leaving: bool
    _accept: Callable[[Update], bool] | None
    _table: MemberTable
    _members: dict[str, Member]
    _suspicions: dict[str, Suspicion]
    _queue: BroadcastQueue

    def _event(self, kind: str, m: Member) -> None:
        raise NotImplementedError

    def _timer(self, at: float, key: Hashable) -> None:
        raise NotImplementedError

    def _refute(self, accused: int) -> None:
        raise NotImplementedError

    def _set_status(self, m: Member, status: MemberStatus) -> None:
        self._table.set_status(m, status, self._now)

    def _apply(self, updates: Iterable[Update]) -> None:
        members, me = self._members, self.name
        for u in updates:
            if u.incarnation > MAX_INCARNATION:
                continue  # hostile: would push a refutation past what the wire can carry
            kind = u.kind
            if kind == ALIVE:
                m = members.get(u.name)
                if m is not None and u.incarnation <= m.incarnation and u.name != me:
                    continue  # fast path: nothing new
                self._alive(u)
            elif kind == SUSPECT:
                self._suspect(u)
            elif kind == DEAD:
                self._dead(u)
            elif kind == LEFT:
                self._left(u)

    def _merge(self, state: Iterable[Update], peer: str) -> None:
        """Merge a full remote view; remote deaths only raise suspicion here (memberlist).

        Alive news learned this way is re-gossiped only when it is about ``peer`` itself
        (a joiner): anti-entropy spreads the rest, and re-gossiping every merged entry
        would cost O(N^2 log N) transmissions while a mesh forms.
        """
        members, me = self._members, self.name
        for u in state:
            if u.incarnation > MAX_INCARNATION:
                continue
            if u.kind == ALIVE:
                m = members.get(u.name)
                if m is not None and u.incarnation <= m.incarnation and u.name != me:
                    continue
                self._alive(u, broadcast=u.name == peer)
            elif u.kind == LEFT:
                self._left(u)
            elif u.kind in (SUSPECT, DEAD):
                self._suspect(Update(SUSPECT, u.name, u.incarnation, source=self.name))

    def _alive(self, u: Update, broadcast: bool = True) -> None:
        name = u.name
        if name == self.name:
            if self._leaving or u.incarnation < self._inc:
                return
            if u.incarnation == self._inc and u.record == self._record:
                return
            if u.incarnation > self._inc and self._accept is not None and not self._accept(u):
                return  # a higher incarnation of ours that we never signed
            self._refute(u.incarnation)
            return
        m = self._members.get(name)
        if m is not None and u.incarnation <= m.incarnation:
            return
        if self._accept is not None and not self._accept(u):
            return
        if broadcast:
            self._queue.push(u)
        if m is None:
            self._event(ALIVE, self._table.add(u, self._now))
            return
        self._suspicions.pop(name, None)
        changed = m.address != u.address or m.record != u.record
        m.incarnation, m.address, m.record = u.incarnation, u.address, u.record
        m.touch()
        if m.status != ALIVE:
            if m.status in GONE and name not in self._table.probe_list:
                self._table.insert_probe(name)
            self._set_status(m, ALIVE)
            self._event(ALIVE, m)
        elif changed:
            self._event("updated", m)

    def _beyond_signed(self, u: Update, m: Member) -> bool:
        """A claim about another member above the incarnation it last signed."""
        return u.name != self.name and u.incarnation > m.incarnation

    def _suspect(self, u: Update) -> None:
        name = u.name
        m = self._members.get(name)
        if m is None or u.incarnation < m.incarnation or self._beyond_signed(u, m):
            return
        s = self._suspicions.get(name)
        if s is not None:
            if u.incarnation == s.incarnation and s.confirm(u.source, self._now):
                self._queue.push(u)
                self._timer(s.deadline, ("suspect", name))
            return
        if m.status != ALIVE:
            return
        if name == self.name:
            self._refute(self._inc)  # never at the accuser's number
            return
        self._queue.push(u)
        m.touch()
        self._set_status(m, SUSPECT)
        cfg, n = self.config, len(self._members)
        k = cfg.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        lo = cfg.suspicion_timeout(n)
        s = Suspicion(
            self._now, u.source, u.incarnation, k, lo, cfg.suspicion_max_timeout_mult * lo
        )
        self._suspicions[name] = s
        self._timer(s.deadline, ("suspect", name))
        self._event(SUSPECT, m)

    def _dead(self, u: Update) -> None:
        name = u.name
        m = self._members.get(name)
        if m is None or u.incarnation < m.incarnation or self._beyond_signed(u, m):
            return
        self._suspicions.pop(name, None)
        if m.status in GONE:
            return
        if name == self.name:
            self._refute(self._inc)  # never at the accuser's number
            return
        self._queue.push(u)
        m.touch()
        self._set_status(m, DEAD)
        self._event(DEAD, m)

    def _left(self, u: Update) -> None:
        name = u.name
        m = self._members.get(name)
        if m is None or u.incarnation < m.incarnation:
            return
        if name == self.name:
            if not self._leaving:  # a stale departure from a previous life, if we signed it
                genuine = self._accept is None or self._accept(u)
                self._refute(u.incarnation if genuine else self._inc)
            return
        if m.status == LEFT:
            return
        if self._accept is not None and not self._accept(u):
            return
        self._suspicions.pop(name, None)
        self._queue.push(u)
        m.incarnation = u.incarnation
        m.touch()
        self._set_status(m, LEFT)
        self._event(LEFT, m)
