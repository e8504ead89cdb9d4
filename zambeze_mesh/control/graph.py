"""A campaign's dependency graph as plain adjacency, for the state machines.

The validated :class:`~zambeze_mesh.scheduling.dag.CampaignDag` (networkx) is built
once at submission; the machines get this copy of its edges and retry counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from zambeze_mesh.control.states import TERMINAL, ActivityState, CampaignState

A = ActivityState


@dataclass(frozen=True)
class Graph:
    """Activities in topological order (ties: submission order), their edges, retries."""

    order: tuple[str, ...]
    preds: Mapping[str, tuple[str, ...]]
    succs: Mapping[str, tuple[str, ...]]
    retries: Mapping[str, int]

    @classmethod
    def of(
        cls, order: Sequence[str], preds: Mapping[str, Sequence[str]], retries: Mapping[str, int]
    ) -> Graph:
        """A graph from its topological order and each activity's predecessors."""
        pos = {n: i for i, n in enumerate(order)}
        succs: dict[str, list[str]] = {n: [] for n in order}
        for n in order:
            for p in preds.get(n, ()):
                succs[p].append(n)
        return cls(
            tuple(order),
            {n: tuple(preds.get(n, ())) for n in order},
            {n: tuple(sorted(s, key=pos.__getitem__)) for n, s in succs.items()},
            dict(retries),
        )

    def ready(self, states: Mapping[str, str]) -> list[str]:
        """PENDING activities whose predecessors all SUCCEEDED, in topological order."""
        return [
            n
            for n in self.order
            if states.get(n, A.PENDING) == A.PENDING
            and all(states.get(p) == A.SUCCEEDED for p in self.preds[n])
        ]

    def unblocked_by(self, name: str, states: Mapping[str, str]) -> list[str]:
        """Successors of ``name`` that :meth:`ready` would now return."""
        return [
            s
            for s in self.succs[name]
            if states.get(s, A.PENDING) == A.PENDING
            and all(states.get(p) == A.SUCCEEDED for p in self.preds[s])
        ]

    def dependants(self, name: str) -> list[str]:
        """Every transitive successor of ``name``, in topological order."""
        seen: set[str] = set()
        todo = list(self.succs[name])
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self.succs[n])
        return [n for n in self.order if n in seen]

    def on_failure(self, name: str, states: Mapping[str, str]) -> list[str]:
        """Dependants of ``name`` to skip (those not already in a final state)."""
        return [d for d in self.dependants(name) if states.get(d, A.PENDING) not in TERMINAL]

    def final_state(self, states: Mapping[str, str]) -> CampaignState:
        """RUNNING while an activity is not final; then SUCCEEDED if all succeeded,
        FAILED if any failed, else CANCELLED (FAILED when only skips remain)."""
        seen = set()
        for name in self.order:
            s = states.get(name, A.PENDING)
            if s not in TERMINAL:
                return CampaignState.RUNNING
            seen.add(s)
        if seen == {A.SUCCEEDED}:
            return CampaignState.SUCCEEDED
        if A.FAILED in seen:
            return CampaignState.FAILED
        if A.CANCELLED in seen:
            return CampaignState.CANCELLED
        return CampaignState.FAILED
