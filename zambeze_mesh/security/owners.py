"""Campaign ownership: who a caller is, as an owner, and what it may see.

A campaign belongs to the identity that submitted it: the SPIFFE ID of a client
(or agent) certificate, or :data:`LOCAL` for a caller on the agent's Unix socket.
The socket is mode 0600 in the agent home, so only the agent's own Unix user (or
root) reaches it; that user can read the agent's store anyway, so local callers
are admins. Identities listed in the agent config's ``admins`` are admins too.
Admins see and control every campaign; everyone else only their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from zambeze_mesh.errors import InvalidInput, Unauthenticated
from zambeze_mesh.security.authz import Caller
from zambeze_mesh.security.identity import Identity
from zambeze_mesh.settings.checks import LOCAL

_SPIFFE = "spiffe://"


def owner_of(caller: Caller | None) -> str:
    """The owner identity of ``caller``: its SPIFFE ID, or :data:`LOCAL`."""
    if caller is None or caller.kind == "anonymous":
        raise Unauthenticated("campaigns need an authenticated caller")
    if caller.kind == "local":
        return LOCAL
    assert caller.identity is not None
    return caller.identity.uri


def wire_owner(mesh: str, monitor: str, owner: str) -> str:
    """The identity a campaign's activities run as on contractors: its owner's
    SPIFFE ID, or the monitor agent's for a campaign submitted on that agent's Unix
    socket (or stored before campaigns had owners)."""
    if owner.startswith(_SPIFFE):
        return owner
    return Identity.agent(mesh, monitor).uri


def owner_dir(owner: str) -> str:
    """A short, stable, file-name-safe name for ``owner`` (a directory under ``runs/``).

    ``spiffe://<mesh>/client/alice`` gives ``client-alice-<10 hex>``: readable, and the
    hash of the full identity keeps two owners that sanitise alike apart.
    """
    if not owner:
        raise InvalidInput("an owner identity is needed")
    tail = owner[len(_SPIFFE) :].partition("/")[2] if owner.startswith(_SPIFFE) else owner
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in tail).strip(".-")[:48]
    digest = hashlib.sha256(owner.encode()).hexdigest()[:10]
    return f"{safe}-{digest}" if safe else digest


@dataclass(frozen=True, slots=True)
class Access:
    """What one caller may see: its own campaigns, or all of them (admin)."""

    owner: str
    admin: bool

    @classmethod
    def of(cls, caller: Caller | None, admins: Iterable[str]) -> Access:
        """The access of ``caller`` given the agent's ``admins``."""
        owner = owner_of(caller)
        return cls(owner, owner == LOCAL or owner in set(admins))

    def sees(self, owner: str) -> bool:
        """Whether a campaign owned by ``owner`` is visible to this caller."""
        return self.admin or owner == self.owner

    @property
    def scope(self) -> str | None:
        """The owner to filter listings by (None: everything)."""
        return None if self.admin else self.owner
