"""Which agents could run an activity, and why the others cannot.

Used by the monitor to choose whom to send a call for proposals, and by a
contractor to decide whether to refuse one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from zambeze_mesh.membership.status import LIVE
from zambeze_mesh.scheduling.model import ActivityDef, AgentInfo, transfer_dest_agent

#: Member statuses an activity may be placed on. A SUSPECT member is usually only
#: slow; if it really is gone, the bid deadline and ``AgentDown`` deal with it.
LIVE_STATUSES = LIVE


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _has_plugin(activity: ActivityDef, agent: AgentInfo) -> bool:
    if activity.plugin in agent.plugins:
        return True
    # Transfers are built into every agent that speaks a transfer method.
    return (
        activity.kind == "transfer"
        and activity.plugin == "transfer"
        and bool(agent.transfer_methods)
    )


def fits(activity: ActivityDef, agent: AgentInfo) -> str | None:
    """None if ``agent`` can take ``activity``, else a short reason why not."""
    if agent.status not in LIVE_STATUSES:
        return f"agent is {agent.status}"
    if activity.agent and activity.agent != agent.name:
        return f"pinned to agent {activity.agent}"
    dest = transfer_dest_agent(activity)
    if dest is not None and dest != agent.name:
        return f"transfer destination is agent {dest}"
    if not _has_plugin(activity, agent):
        return f"no plugin {activity.plugin!r}"
    if activity.is_function and not agent.accept_functions:
        return "does not accept functions"
    if agent.slots <= 0:
        return "has no slots"
    req = activity.requires
    for key in sorted(req.labels):
        want = req.labels[key]
        if agent.labels.get(key) != want:
            return f"label {key}={want} not matched"
    if req.cpus > agent.cpus:
        return f"needs {req.cpus} cpus, has {agent.cpus}"
    if req.gpus > agent.gpus:
        return f"needs {req.gpus} gpus, has {agent.gpus}"
    if req.memory_bytes > agent.memory_bytes:
        return f"needs {_fmt_bytes(req.memory_bytes)} memory, has {_fmt_bytes(agent.memory_bytes)}"
    return None


def candidates(
    activity: ActivityDef, agents: Iterable[AgentInfo]
) -> tuple[list[AgentInfo], dict[str, str]]:
    """Split ``agents`` into those that fit and a map ``name -> reason`` for the rest."""
    ok: list[AgentInfo] = []
    reasons: dict[str, str] = {}
    for agent in agents:
        why = fits(activity, agent)
        if why is None:
            ok.append(agent)
        else:
            reasons[agent.name] = why
    return ok, reasons


def describe_needs(activity: ActivityDef) -> str:
    """``plugin 'dask' with labels {role=hpc}, 4 cpus, on agent X`` for messages."""
    parts = [f"plugin {activity.plugin!r}"]
    req = activity.requires
    if req.labels:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(req.labels.items()))
        parts.append(f"with labels {{{labels}}}")
    extra = []
    if req.cpus:
        extra.append(f"{req.cpus} cpus")
    if req.gpus:
        extra.append(f"{req.gpus} gpus")
    if req.memory_bytes:
        extra.append(f"{_fmt_bytes(req.memory_bytes)} memory")
    if activity.is_function:
        extra.append("function support")
    if extra:
        parts.append("and " + ", ".join(extra))
    if activity.agent:
        parts.append(f"on agent {activity.agent}")
    return " ".join(parts)


def no_candidates_message(activity: ActivityDef, reasons: Mapping[str, str], limit: int = 8) -> str:
    """Why ``activity`` has nowhere to go, listing (at most ``limit``) excluded members."""
    head = f"activity {activity.name!r}: no agent offers {describe_needs(activity)}"
    if not reasons:
        return head + " (no live members)"
    names = sorted(reasons)
    shown = "; ".join(f"{n}: {reasons[n]}" for n in names[:limit])
    more = f"; ... {len(names) - limit} more" if len(names) > limit else ""
    return f"{head} ({shown}{more})"
