"""Per-agent execution policy: which identities may run which plugins here.

The ``[policy]`` table of an agent's ``config.toml`` maps an identity (a SPIFFE ID
such as ``spiffe://<mesh>/client/alice``, or ``"*"`` for everyone else) to the
plugins it may run on this agent. ``"*"`` in a list allows every plugin;
``"functions"`` additionally allows shipped Python functions (a pickled callable,
as opposed to a script). Plugin names are those an agent advertises (``shell``,
``python``, ``dask``, ``parsl``...) and ``transfer`` for transfer activities. For
example::

    [policy]
    "spiffe://lab/client/alice" = ["python"]          # scripts only, no functions
    "spiffe://lab/client/bob" = ["python", "functions"]
    "*" = ["shell", "python", "functions"]

The identity is a campaign's owner. A campaign submitted on an agent's Unix socket
runs as that agent's identity (``spiffe://<mesh>/agent/<name>``) elsewhere.

Without a ``[policy]`` table everyone may run everything: the right default for a
mesh of one user, where every certificate is that user's. With a table, an
identity without an entry and without ``"*"`` may run nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from zambeze_mesh.errors import InvalidInput, NotPermitted

ANY = "*"
FUNCTIONS = "functions"
_SPIFFE = "spiffe://"
MAX_RULES = 1000


def _check_rule(identity: object, allowed: object) -> tuple[str, frozenset[str]]:
    if not isinstance(identity, str) or not (identity == ANY or identity.startswith(_SPIFFE)):
        raise InvalidInput(f"policy: {identity!r} is neither a SPIFFE ID nor '*'")
    if not isinstance(allowed, list) or not all(
        isinstance(p, str) and p and len(p) <= 128 for p in allowed
    ):
        raise InvalidInput(f"policy for {identity!r} must be a list of plugin names")
    return identity, frozenset(allowed)


@dataclass(frozen=True)
class ExecutionPolicy:
    """The parsed ``[policy]`` table (empty: everything allowed)."""

    rules: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, table: Mapping[str, object]) -> ExecutionPolicy:
        """Validate and parse a ``[policy]`` table."""
        if not isinstance(table, Mapping):
            raise InvalidInput("policy must be a table of identity = [plugins]")
        if len(table) > MAX_RULES:
            raise InvalidInput(f"policy has more than {MAX_RULES} entries")
        return cls(dict(_check_rule(k, v) for k, v in table.items()))

    def refusal(self, identity: str, plugin: str, *, function: bool = False) -> str | None:
        """Why ``identity`` may not run ``plugin`` (a shipped function if ``function``)
        on this agent, or None when it may."""
        if not self.rules:
            return None
        allowed = self.rules.get(identity, self.rules.get(ANY))
        who = identity or "the monitor agent"
        if allowed is None:
            return f"{who} may not run activities on this agent (execution policy)"
        if plugin not in allowed and ANY not in allowed:
            return f"{who} may not run plugin {plugin!r} on this agent (execution policy)"
        if function and FUNCTIONS not in allowed:
            return f"{who} may not ship functions to this agent (execution policy)"
        return None

    def require(self, identity: str, plugin: str, *, function: bool = False) -> None:
        """Raise NotPermitted unless ``identity`` may run ``plugin`` here."""
        reason = self.refusal(identity, plugin, function=function)
        if reason is not None:
            raise NotPermitted(reason)
