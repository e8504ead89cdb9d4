"""``zmesh run``, ``zmesh campaigns``, ``zmesh status`` and ``zmesh cancel``."""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from zambeze_mesh.agent.home import Home
from zambeze_mesh.errors import InvalidInput


def _client(home: Home) -> Any:
    from zambeze_mesh.campaign.client import connect

    home.require()
    return connect(home=str(home.root))


def _status_doc(status: Any) -> dict[str, Any]:
    doc = asdict(status)
    for act in doc["activities"]:
        act.pop("result", None)
        act["detail"] = dict(act["detail"])
    return doc


def run_file(home: Home, path: str, args: list[str]) -> int:
    """Run a campaign script against this home's agent and follow what it dispatched."""
    from zambeze_mesh.campaign.campaign import dispatched

    script = Path(path)
    if not script.is_file():
        raise InvalidInput(f"no campaign file {path}")
    home.require()
    os.environ["ZMESH_HOME"] = str(home.root)
    _client(home)  # the default client of everything the script does
    old_argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old_argv
    worst = 0
    for campaign in dispatched():
        if not campaign.done:
            campaign.poll(blocking=True)
        state = campaign.wait()
        print(f"campaign {campaign.id} ({campaign.name}): {state}")
        if state != "SUCCEEDED":
            worst = 1
    return worst


def list_campaigns(home: Home, as_json: bool) -> int:
    """Campaigns monitored by this home's agent."""
    from zambeze_mesh.campaign.loop import bridge

    client = _client(home)
    rows = bridge.run(client.list_campaigns())
    if as_json:
        print(json.dumps([_status_doc(s) for s in rows]))
        return 0
    from rich.table import Table

    table = Table(title="campaigns")
    for col in ("id", "name", "state", "activities", "created"):
        table.add_column(col)
    for s in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.created_unix_ms / 1000))
        table.add_row(s.campaign_id, s.name, s.state, str(len(s.activities)), created)
    Console().print(table)
    return 0


def show_status(
    home: Home, cid: str, *, as_json: bool, watch: bool, graph: str | None = None
) -> int:
    """One campaign as a table (or JSON), optionally followed live until it ends.

    With ``graph``, also draw its DAG into that file (see :mod:`zambeze_mesh.cli.graph`).
    """
    from zambeze_mesh.campaign.campaign import Campaign
    from zambeze_mesh.campaign.loop import bridge
    from zambeze_mesh.campaign.view import build_table

    client = _client(home)
    if as_json:
        if watch:
            Campaign.attach(cid, client=client).wait()
        print(json.dumps(_status_doc(bridge.run(client.get(cid)))))
    else:
        campaign = Campaign.attach(cid, client=client)
        if watch:
            try:
                campaign.poll(blocking=True)
            except Exception:
                pass
        else:
            Console().print(build_table(campaign.snapshot(), int(time.time() * 1000)))
    final = bridge.run(client.get(cid))
    if graph:
        from zambeze_mesh.cli.graph import campaign_graph

        out = campaign_graph(home.root, final, graph)
        if not as_json:
            print(f"wrote the campaign graph to {out}")
    return 0 if final.state in ("SUCCEEDED", "RUNNING") else 1


def cancel(home: Home, cid: str) -> int:
    """Cancel a campaign."""
    from zambeze_mesh.campaign.loop import bridge

    status = bridge.run(_client(home).cancel(cid))
    print(f"campaign {cid}: {status.state}")
    return 0
