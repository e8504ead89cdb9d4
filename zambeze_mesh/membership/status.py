"""The status of a mesh member, one enum for the whole project.

Its values are the spelling the store and the gossip messages have always used
(``"alive"``, ``"suspect"``, ``"dead"``, ``"left"``), so stored members load as they
are; :meth:`MemberStatus.parse` also reads the upper-case names and the protobuf
``MemberStatus`` names (``"MEMBER_STATUS_ALIVE"``), and :attr:`MemberStatus.proto_name`
gives the latter.
"""

from __future__ import annotations

import enum

from zambeze_mesh.errors import InvalidInput

__all__ = ["GONE", "LIVE", "MemberStatus"]

_PROTO_PREFIX = "MEMBER_STATUS_"


class MemberStatus(enum.StrEnum):
    """``alive`` (answering), ``suspect`` (missed probes, may refute), ``dead``
    (declared failed) or ``left`` (said goodbye); matches ``zambeze_mesh.v1.MemberStatus``."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"

    @classmethod
    def parse(cls, text: str) -> MemberStatus:
        """``"alive"``, ``"ALIVE"`` or ``"MEMBER_STATUS_ALIVE"`` -> :attr:`ALIVE`."""
        try:
            return cls(text.lower().removeprefix(_PROTO_PREFIX.lower()))
        except ValueError:
            raise InvalidInput(f"{text!r} is not a member status") from None

    @property
    def proto_name(self) -> str:
        """The protobuf enum value's name, e.g. ``"MEMBER_STATUS_ALIVE"``."""
        return _PROTO_PREFIX + self.name

    @property
    def is_live(self) -> bool:
        """Alive or suspect: still a member that may take work."""
        return self in LIVE


#: Members that may still answer (and take work).
LIVE = frozenset({MemberStatus.ALIVE, MemberStatus.SUSPECT})
#: Members that are gone (until they come back with a higher incarnation).
GONE = frozenset({MemberStatus.DEAD, MemberStatus.LEFT})
