"""Deaths are bounded by what the subject signed (SWIM rules under a hostile member)."""

from __future__ import annotations

import random

from zambeze_mesh.membership.config import Config
from zambeze_mesh.membership.messages import ALIVE, DEAD, LEFT, SUSPECT, Gossip, SyncRequest, Update
from zambeze_mesh.membership.rules import MAX_INCARNATION
from zambeze_mesh.membership.steps import Received, Start
from zambeze_mesh.membership.swim import Swim

CFG = Config.local()
HUGE = MAX_INCARNATION  # the largest number the wire check lets through


def _signed(name: str, inc: int) -> tuple[str, str, int]:
    """A stand-in for a signed record: only ``name`` can make one naming itself."""
    return ("signed-by", name, inc)


def _genuine(u: Update) -> bool:
    return u.record == _signed(u.name, u.incarnation)


def _swim(name: str, inc: int = 0) -> Swim:
    swim = Swim(
        name,
        f"{name}:1",
        CFG,
        random.Random(1),
        lambda i: _signed(name, i),
        accept=_genuine,
        incarnation=inc,
    )
    swim.step(0.0, Start([]))
    return swim


def _tell(swim: Swim, now: float, *updates: Update) -> None:
    swim.step(now, Received("evil:1", Gossip("evil", tuple(updates))))


def _alive(name: str, inc: int) -> Update:
    return Update(ALIVE, name, inc, f"{name}:1", _signed(name, inc), name)


def test_death_claim_above_the_subjects_signed_incarnation_is_dropped() -> None:
    observer = _swim("observer")
    _tell(observer, 0.1, _alive("victim", 3))
    for kind in (DEAD, SUSPECT):
        _tell(observer, 0.2, Update(kind, "victim", HUGE, source="evil"))
        _tell(observer, 0.3, Update(kind, "victim", 4, source="evil"))
    m = observer.member("victim")
    assert m is not None and (m.status, m.incarnation) == ("alive", 3)
    # A full-state push-pull carrying the same claim is bounded the same way.
    observer.step(0.4, Received("evil:1", SyncRequest("evil", (Update(DEAD, "victim", HUGE),))))
    m = observer.member("victim")
    assert m is not None and (m.status, m.incarnation) == ("alive", 3)


def test_death_claim_at_the_signed_incarnation_still_counts() -> None:
    """Honest failure detection is unchanged: a DEAD at the known number is believed,
    and the subject's signed refutation brings it back."""
    observer = _swim("observer")
    _tell(observer, 0.1, _alive("victim", 3))
    _tell(observer, 0.2, Update(DEAD, "victim", 3, source="prober"))
    m = observer.member("victim")
    assert m is not None and (m.status, m.incarnation) == ("dead", 3)
    _tell(observer, 0.3, _alive("victim", 4))
    m = observer.member("victim")
    assert m is not None and (m.status, m.incarnation) == ("alive", 4)


def test_subject_refutes_one_above_its_own_number_not_the_accusers() -> None:
    victim = _swim("victim", inc=7)
    for at, kind in enumerate((SUSPECT, DEAD), start=1):
        _tell(victim, float(at), Update(kind, "victim", HUGE, source="evil"))
    assert victim.incarnation == 9  # refuted twice, one step each
    # An unsigned ALIVE or LEFT of ours at a huge number does not move us either ...
    forged = Update(ALIVE, "victim", HUGE, "victim:1", "forged", "evil")
    _tell(victim, 3.0, forged)
    _tell(victim, 3.1, Update(LEFT, "victim", HUGE, "victim:1", "forged", "evil"))
    assert victim.incarnation == 10  # the departure is refuted at our own number
    # ... but a record we really signed (a restart that lost the stored number) does.
    _tell(victim, 4.0, _alive("victim", 40))
    assert victim.incarnation == 41


def test_refutation_wins_in_every_view_after_a_huge_accusation() -> None:
    """The attack end to end on three machines: evil gossips DEAD victim at 2**48."""
    victim, a, b = _swim("victim"), _swim("a"), _swim("b")
    for s in (a, b):
        _tell(s, 0.1, _alive("victim", victim.incarnation))
    for s in (victim, a, b):
        _tell(s, 0.2, Update(DEAD, "victim", HUGE, source="evil"))
    assert victim.incarnation == 1
    refutation = _alive("victim", victim.incarnation)
    for s in (a, b):
        _tell(s, 0.3, refutation)
        m = s.member("victim")
        assert m is not None and m.status == "alive" and m.incarnation == 1
