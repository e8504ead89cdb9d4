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

from zambeze_mesh.cli.local import require_agent
from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.settings.home import Home

#: Campaigns searched when a command is given an id prefix (the agent's ListCampaigns maximum).
PREFIX_SEARCH = 1000


def _client(home: Home) -> Any:
    from zambeze_mesh.campaign.client import connect

    require_agent(home)
    return connect(home=str(home.root))


def resolve_id(client: Any, given: str) -> str:
    """The campaign id ``given`` names: the id itself or a unique prefix of one (like git)."""
    from zambeze_mesh.campaign.loop import bridge

    if not given:
        raise InvalidInput("give a campaign id (or a unique prefix of one)")
    rows = bridge.run(client.list_campaigns(PREFIX_SEARCH))
    # no match among the newest campaigns: ask for it as a full id (the agent says if not)
    return match_id(given, [s.campaign_id for s in rows]) or given


def match_id(given: str, ids: list[str]) -> str | None:
    """The one id of ``ids`` equal to ``given`` or starting with it, None if none does;
    an ambiguous prefix is an error that lists the candidates."""
    if not given:
        raise InvalidInput("give a campaign id (or a unique prefix of one)")
    if given in ids:
        return given
    matches = sorted(i for i in ids if i.startswith(given))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InvalidInput(
            f"campaign id prefix {given!r} is ambiguous: it matches {', '.join(matches)}"
        )
    return None


def _check_syntax(script: Path) -> None:
    """Compile the script first: a syntax error becomes one line with its file and line."""
    try:
        compile(script.read_bytes(), str(script), "exec")
    except SyntaxError as exc:
        where = f"{exc.filename or script}:{exc.lineno}" if exc.lineno else str(script)
        column = f":{exc.offset}" if exc.lineno and exc.offset else ""
        raise InvalidInput(f"{where}{column}: {exc.msg}") from None


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
    _check_syntax(script)
    require_agent(home)
    os.environ["ZMESH_HOME"] = str(home.root)
    _client(home)  # the default client of everything the script does
    old_argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
        worst = 0
        for campaign in dispatched():
            if not campaign.done:
                campaign.poll(blocking=True)
            state = campaign.wait()
            print(f"campaign {campaign.id} ({campaign.name}): {state}")
            if state != "SUCCEEDED":
                worst = 1
    except KeyboardInterrupt:
        _interrupted(home, [c for c in dispatched() if c.id and not c.done])
        return 130
    finally:
        sys.argv = old_argv
    return worst


def _interrupted(home: Home, running: list[Any]) -> None:
    """Ctrl-C: the campaigns keep running on the mesh; say so and how to follow or stop them."""
    if not running:
        print("\ninterrupted (no campaign was left running)", file=sys.stderr, flush=True)
        return
    flag = f" --home {home.root}"
    lines = ["", "interrupted: the mesh keeps running these campaigns:"]
    for c in running:
        lines.append(f"  {c.id} ({c.name})")
        lines.append(f"    follow it again: zmesh{flag} status {c.id} --watch")
        lines.append(f"    cancel it:       zmesh{flag} cancel {c.id}")
    print("\n".join(lines), file=sys.stderr, flush=True)


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
    id_width = max((len(s.campaign_id) for s in rows), default=2)
    # ids are never cut or wrapped (they are copied into status/cancel); names may wrap
    table.add_column("id", no_wrap=True, min_width=id_width, overflow="ignore")
    table.add_column("name", overflow="fold")
    for col in ("state", "activities", "created"):
        table.add_column(col, no_wrap=True)
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
    cid = resolve_id(client, cid)
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

        specs = bridge.run(client.activity_specs(cid))
        out = campaign_graph(final, specs, graph)
        if not as_json:
            print(f"wrote the campaign graph to {out}")
    return 0 if final.state in ("SUCCEEDED", "RUNNING") else 1


def cancel(home: Home, cid: str) -> int:
    """Cancel a campaign."""
    from zambeze_mesh.campaign.loop import bridge

    client = _client(home)
    cid = resolve_id(client, cid)
    status = bridge.run(client.cancel(cid))
    print(f"campaign {cid}: {status.state}")
    return 0
