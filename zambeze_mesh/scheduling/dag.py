"""The campaign DAG: activities as nodes, dependencies as edges (networkx).

A ``"__monitor__"`` node sits in front of every root, so the monitor is the one
source of the graph (as in the Zambeze paper). Edges come from ``depends_on`` and
from output references (``@output:<name>``, see :mod:`.model`).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

import networkx as nx

from zambeze_mesh.errors import InvalidInput, NotFound, ResourceExhausted
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.scheduling.model import MONITOR, ActivityDef, output_refs

MAX_ACTIVITIES = 10_000

#: Campaign states returned by :meth:`CampaignDag.final_state`.
CAMPAIGN_RUNNING = "RUNNING"
CAMPAIGN_SUCCEEDED = "SUCCEEDED"
CAMPAIGN_FAILED = "FAILED"
CAMPAIGN_CANCELLED = "CANCELLED"


def _short(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _topological_order(g: nx.DiGraph, index: Mapping[str, int]) -> list[str]:
    """Topological order, ties broken by submission order (``index``; the monitor first).

    Kahn's algorithm with a heap, on the graph's adjacency: the same order as
    ``nx.lexicographical_topological_sort(g, key=...)``, several times faster.
    """
    indegree = {n: len(g.pred[n]) for n in g}
    heap = [(index.get(n, -1), n) for n, d in indegree.items() if d == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, n = heapq.heappop(heap)
        order.append(n)
        for succ in g.succ[n]:
            indegree[succ] -= 1
            if indegree[succ] == 0:
                heapq.heappush(heap, (index.get(succ, -1), succ))
    return order


class CampaignDag:
    """Validated dependency graph of one campaign.

    Raises :class:`InvalidInput` for duplicate names, references to unknown
    activities and cycles, :class:`ResourceExhausted` above ``MAX_ACTIVITIES``.
    """

    def __init__(self, activities: Sequence[ActivityDef]) -> None:
        if len(activities) > MAX_ACTIVITIES:
            raise ResourceExhausted(
                f"campaign has {len(activities)} activities, the limit is {MAX_ACTIVITIES}"
            )
        if not activities:
            raise InvalidInput("campaign has no activities")
        self._acts: dict[str, ActivityDef] = {}
        dups: list[str] = []
        for act in activities:
            if act.name == MONITOR:
                raise InvalidInput(f"activity name {MONITOR!r} is reserved")
            if act.name in self._acts:
                dups.append(act.name)
            self._acts[act.name] = act
        if dups:
            raise InvalidInput(f"duplicate activity names: {_short(sorted(set(dups)))}")
        self._index = {name: i for i, name in enumerate(self._acts)}

        g: nx.DiGraph = nx.DiGraph()
        g.add_node(MONITOR)
        g.add_nodes_from(self._acts)
        for act in activities:
            for dep in act.depends_on:
                if dep not in self._acts:
                    raise InvalidInput(f"activity {act.name!r} depends on unknown activity {dep!r}")
                g.add_edge(dep, act.name, via="depends_on")
            for ref in sorted(output_refs(act)):
                if ref not in self._acts:
                    raise InvalidInput(
                        f"activity {act.name!r} uses the output of unknown activity {ref!r}"
                    )
                if not g.has_edge(ref, act.name):
                    g.add_edge(ref, act.name, via="output")
        cycle = None
        if not nx.is_directed_acyclic_graph(g):  # cheap; find_cycle only to name it
            cycle = nx.find_cycle(g)
        if cycle:
            names = [edge[0] for edge in cycle]
            raise InvalidInput(f"dependency cycle: {' -> '.join([*names, names[0]])}")
        for name in self._acts:
            if g.in_degree(name) == 0:
                g.add_edge(MONITOR, name, via="monitor")
        self._g = g
        self._order: list[str] = [n for n in _topological_order(g, self._index) if n != MONITOR]
        self._pos = {name: i for i, name in enumerate(self._order)}

    # -- introspection ---------------------------------------------------

    @property
    def graph(self) -> nx.DiGraph:
        """A read-only view of the underlying graph (includes the monitor node)."""
        return self._g.copy(as_view=True)

    @property
    def activities(self) -> Mapping[str, ActivityDef]:
        """Activities by name, in submission order."""
        return self._acts

    def __len__(self) -> int:
        return len(self._acts)

    def __contains__(self, name: object) -> bool:
        return name in self._acts

    def activity(self, name: str) -> ActivityDef:
        """The activity called ``name`` (:class:`NotFound` if none)."""
        try:
            return self._acts[name]
        except KeyError:
            raise NotFound(f"no activity {name!r} in this campaign") from None

    def _check(self, name: str) -> None:
        if name not in self._acts:
            raise NotFound(f"no activity {name!r} in this campaign")

    def roots(self) -> list[str]:
        """Activities with no upstream activity, in submission order."""
        return [n for n in self._order if self._g.has_edge(MONITOR, n)]

    def predecessors(self, name: str) -> list[str]:
        """Direct upstream activities of ``name`` (never the monitor)."""
        self._check(name)
        return sorted(
            (p for p in self._g.predecessors(name) if p != MONITOR), key=self._pos.__getitem__
        )

    def successors(self, name: str) -> list[str]:
        """Direct downstream activities of ``name``."""
        self._check(name)
        return sorted(self._g.successors(name), key=self._pos.__getitem__)

    def topological_order(self) -> list[str]:
        """All activities, dependencies first; ties keep submission order."""
        return list(self._order)

    def dependants(self, name: str) -> list[str]:
        """All transitive descendants of ``name``, in topological order."""
        self._check(name)
        return sorted(nx.descendants(self._g, name), key=self._pos.__getitem__)

    # -- progress --------------------------------------------------------

    def ready(self, states: Mapping[str, str]) -> list[str]:
        """Activities in PENDING whose predecessors all SUCCEEDED, in topological order.

        Activities missing from ``states`` count as PENDING.
        """
        out = []
        for name in self._order:
            if states.get(name, st.PENDING) != st.PENDING:
                continue
            preds = self._g.predecessors(name)
            if all(p == MONITOR or states.get(p) == st.SUCCEEDED for p in preds):
                out.append(name)
        return out

    def unblocked_by(self, name: str, states: Mapping[str, str]) -> list[str]:
        """Direct successors of ``name`` that :meth:`ready` would now return.

        The cheap, incremental form of :meth:`ready` to call after ``name`` succeeded.
        """
        out = []
        for succ in self.successors(name):
            if states.get(succ, st.PENDING) != st.PENDING:
                continue
            if all(states.get(p) == st.SUCCEEDED for p in self._g.predecessors(succ)):
                out.append(succ)
        return out

    def on_failure(self, name: str, states: Mapping[str, str] | None = None) -> list[str]:
        """Activities to mark SKIPPED because ``name`` failed or was cancelled.

        All transitive descendants, minus those already terminal in ``states``.
        """
        descendants = self.dependants(name)
        if states is None:
            return descendants
        return [d for d in descendants if not st.is_terminal(states.get(d, st.PENDING))]

    def final_state(self, states: Mapping[str, str]) -> str:
        """The campaign state implied by the activity states.

        RUNNING while any activity is not terminal (missing = PENDING); then
        SUCCEEDED if all succeeded, FAILED if any failed, else CANCELLED.
        """
        seen = set()
        for name in self._acts:
            s = states.get(name, st.PENDING)
            if not st.is_terminal(s):
                return CAMPAIGN_RUNNING
            seen.add(s)
        if seen == {st.SUCCEEDED}:
            return CAMPAIGN_SUCCEEDED
        if st.FAILED in seen:
            return CAMPAIGN_FAILED
        if st.CANCELLED in seen:
            return CAMPAIGN_CANCELLED
        return CAMPAIGN_FAILED
