"""``zmesh pilot submit | ls | cancel``: pilot agents on the agent's batch scheduler."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from zambeze_mesh.agent.bootstrap import open_store
from zambeze_mesh.errors import Unavailable, ZmeshError
from zambeze_mesh.pilots import jobs
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.settings.home import Home

FINAL = ("COMPLETED", "FAILED", "CANCELED")


def submit(
    home: Home,
    *,
    nodes: int,
    walltime: str,
    slots: int,
    labels: dict[str, str],
    outputs: str = "return",
) -> int:
    """Submit one pilot and print its name and job id."""
    store = open_store(home)
    try:
        row = jobs.submit_pilot(
            home,
            store,
            nodes=nodes,
            walltime=walltime,
            slots=slots,
            labels=labels,
            pilot_outputs=outputs,
        )
    finally:
        store.close()
    print(f"submitted pilot {row.name} ({row.scheduler} job {row.job_id})")
    return 0


def _mesh_view(home: Home) -> dict[str, dict[str, Any]]:
    from zambeze_mesh.cli.local import list_members
    from zambeze_mesh.cli.members import member_dicts

    try:
        resp = asyncio.run(list_members(home, timeout=5.0))
    except ZmeshError:
        return {}
    return {m["name"]: m for m in member_dicts(resp)}


def pilot_dicts(home: Home) -> list[dict[str, Any]]:
    """Every pilot of this agent with its scheduler and mesh state (JSON-ready)."""
    cfg = AgentConfig.load(home.config)
    store = open_store(home)
    try:
        rows = jobs.list_rows(store)
    finally:
        store.close()
    states = jobs.scheduler_states(cfg, [r.job_id for r in rows])
    members = _mesh_view(home)
    out = []
    for r in rows:
        m = members.get(r.name)
        left = jobs.time_left_s(r)
        ps = r.pilot_state()
        mesh = m["status"] if m else ps.get("mesh", "not joined")
        out.append(
            {
                "name": r.name,
                "job_id": r.job_id,
                "scheduler": r.scheduler,
                "scheduler_state": states.get(r.job_id, "gone"),
                "mesh_state": mesh,
                "slots": m["slots"] if m else r.slots,
                "slots_in_use": (m["slots"] - m["free_slots"]) if m else 0,
                "time_left_s": None if left is None else round(left),
                "labels": r.labels,
                "state": r.state,
            }
        )
    return out


def ls(home: Home, *, as_json: bool) -> int:
    """Print the pilots as a table or JSON."""
    pilots = pilot_dicts(home)
    if as_json:
        print(json.dumps(pilots))
        return 0
    t = Table(title="pilots")
    for col in ("name", "job", "scheduler", "mesh", "slots used", "time left"):
        t.add_column(col)
    for p in pilots:
        left = "-" if p["time_left_s"] is None else f"{p['time_left_s']}s"
        t.add_row(
            p["name"],
            p["job_id"],
            p["scheduler_state"],
            p["mesh_state"],
            f"{p['slots_in_use']}/{p['slots']}",
            left,
        )
    Console().print(t)
    return 0


def cancel(home: Home, name: str, *, timeout: float = 300.0) -> int:
    """Drain the pilot (it finishes or hands back its work and leaves), then cancel its job."""
    cfg = AgentConfig.load(home.config)
    store = open_store(home)
    try:
        row = jobs.get_row(store, name)
        jobs.set_state(store, row.name, "cancelling")
        jobs.record_event(store, "cancel", "drain requested", row.name)
    finally:
        store.close()
    jobs.request_drain(row)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if row.pilot_state().get("mesh") == "left":
            break
        state = jobs.scheduler_states(cfg, [row.job_id]).get(row.job_id, "gone")
        if state in (*FINAL, "gone") or (state == "QUEUED" and not row.pilot_state()):
            break  # never started, or already ended
        time.sleep(0.5)
    jobs.cancel_job(cfg, row.job_id)
    while time.monotonic() < deadline:
        state = jobs.scheduler_states(cfg, [row.job_id]).get(row.job_id, "gone")
        if state in (*FINAL, "gone"):
            break
        time.sleep(0.5)
    else:
        raise Unavailable(f"{row.scheduler} job {row.job_id} did not end in {timeout:.0f}s")
    mesh = row.pilot_state().get("mesh", "never joined")
    store = open_store(home)
    try:
        jobs.set_state(store, row.name, "cancelled")
        jobs.record_event(store, "cancelled", f"{mesh}; job {row.job_id} ended", row.name)
    finally:
        store.close()
    print(f"pilot {row.name}: {mesh}; {row.scheduler} job {row.job_id} ended")
    return 0


def events(home: Home, *, as_json: bool, limit: int = 100) -> int:
    """Print the latest pilot events (autoscaler decisions, submissions, cancels)."""
    store = open_store(home)
    try:
        evs = jobs.list_events(store, limit)
    finally:
        store.close()
    if as_json:
        print(json.dumps([e.__dict__ for e in evs]))
        return 0
    for e in evs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time_ms / 1000))
        print(f"{when}  {e.kind:<13} {e.pilot or '-':<24} {e.message}")
    return 0
