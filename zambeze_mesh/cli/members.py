"""``zmesh members``: a table, JSON, or a live view of the member list."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from zambeze_mesh.cli.local import list_members
from zambeze_mesh.errors import ZmeshError
from zambeze_mesh.membership.status import MemberStatus
from zambeze_mesh.settings.home import Home
from zambeze_mesh.v1 import campaigns_pb2, common_pb2

COLORS = {
    MemberStatus.ALIVE: "green",
    MemberStatus.SUSPECT: "yellow",
    MemberStatus.DEAD: "red",
    MemberStatus.LEFT: "dim",
}


def status_name(status: common_pb2.MemberStatus.ValueType) -> str:
    """A wire ``MemberStatus`` as its name (``"alive"``...; ``"unknown"`` if unset)."""
    try:
        return str(MemberStatus.parse(common_pb2.MemberStatus.Name(status)))
    except (ValueError, ZmeshError):
        return "unknown"


def member_dicts(resp: campaigns_pb2.ListMembersResponse) -> list[dict[str, Any]]:
    """Members as JSON-ready dicts (name, address, status, incarnation, capabilities)."""
    out = []
    for m in sorted(resp.members, key=lambda m: m.name):
        caps = m.capabilities
        out.append(
            {
                "name": m.name,
                "address": m.address,
                "status": status_name(m.status),
                "incarnation": m.incarnation,
                "self": m.is_self,
                "plugins": list(caps.plugins),
                "slots": caps.slots,
                "free_slots": caps.free_slots,
                "cpus": caps.cpus,
                "memory_bytes": caps.memory_bytes,
                "gpus": caps.gpus,
                "labels": dict(caps.labels),
                "data_roots": list(caps.data_roots),
                "transfer_methods": list(caps.transfer_methods),
                "scheduler": caps.scheduler,
            }
        )
    return out


def members_table(resp: campaigns_pb2.ListMembersResponse) -> Table:
    """A rich table of the members."""
    t = Table(title=f"mesh {resp.mesh} as seen by {resp.self_name}")
    for col in ("name", "address", "status", "inc", "plugins", "slots", "labels"):
        t.add_column(col)
    for m in member_dicts(resp):
        status = m["status"]
        t.add_row(
            m["name"] + (" *" if m["self"] else ""),
            m["address"],
            f"[{COLORS.get(status, 'white')}]{status}[/]",
            str(m["incarnation"]),
            ",".join(m["plugins"]),
            f"{m['free_slots']}/{m['slots']}",
            ",".join(f"{k}={v}" for k, v in sorted(m["labels"].items())),
        )
    return t


def show_members(home: Home, *, as_json: bool, watch: bool) -> int:
    """Print the members once, or follow them (``--watch``) until interrupted."""
    if not watch:
        resp = asyncio.run(list_members(home))
        if as_json:
            print(json.dumps(member_dicts(resp)))
        else:
            Console().print(members_table(resp))
        return 0
    return asyncio.run(_watch(home, as_json))


async def _watch(home: Home, as_json: bool) -> int:
    last = None
    if as_json:
        while True:
            docs = member_dicts(await list_members(home))
            if docs != last:
                print(json.dumps(docs), flush=True)
                last = docs
            await asyncio.sleep(0.5)
    with Live(members_table(await list_members(home)), refresh_per_second=4) as live:
        while True:
            await asyncio.sleep(0.5)
            live.update(members_table(await list_members(home)))
