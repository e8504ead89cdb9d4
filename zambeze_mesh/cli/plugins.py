"""``zmesh plugins``: which execution plugins this agent's config loads, and why others do not.

The registry is loaded in the CLI process from the home's ``config.toml`` exactly as
the agent loads it (:func:`zambeze_mesh.execution.loading.load_registry`), so it
works while the agent is stopped and shows the same reasons.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from zambeze_mesh.execution.loading import BATCH, load_registry, scheduler_facts
from zambeze_mesh.execution.registry import PluginRegistry
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.settings.home import Home


def describe(cfg: AgentConfig, registry: PluginRegistry) -> dict[str, Any]:
    """A JSON-able report: loaded plugins (kinds, capabilities), failed and disabled ones."""
    loaded = []
    for name in registry.names():
        plugin = registry.loaded[name]
        try:
            caps = dict(plugin.capabilities())
        except Exception as exc:  # a plugin's bug must not hide the others
            caps = {"error": f"{type(exc).__name__}: {exc}"}
        loaded.append({"name": name, "kinds": sorted(plugin.kinds), "capabilities": caps})
    disabled = {name: "disabled in config (disabled_plugins)" for name in cfg.disabled_plugins}
    if not cfg.scheduler and BATCH not in disabled:
        disabled[BATCH] = "no scheduler configured (set scheduler in config.toml)"
    scheduler, partitions = scheduler_facts(registry)
    routed = {}
    if BATCH in registry.loaded:
        routed = {kind: BATCH for kind in sorted(registry.loaded[BATCH].kinds)}
    return {
        "agent": cfg.name,
        "loaded": loaded,
        "failed": dict(sorted(registry.failed.items())),
        "missing": dict(sorted(registry.missing.items())),
        "disabled": dict(sorted(disabled.items())),
        "scheduler": scheduler,
        "partitions": partitions,
        "routed": routed,
    }


def show_plugins(home: Home, as_json: bool = False) -> int:
    """Print the plugin report for ``home``; exit code 0 (1 when some plugin failed).

    Optional plugins whose dependency is not installed are listed as ``not installed``
    with the ``pip install`` that adds them; they do not make the exit code non-zero.
    """
    home.require()
    cfg = AgentConfig.load(home.config)
    # the report below gives every reason once; the registry's log lines would repeat them
    logging.getLogger("zambeze_mesh.execution.registry").setLevel(logging.ERROR)
    registry = load_registry(cfg, (home.root / cfg.data_dir).absolute())
    try:
        doc = describe(cfg, registry)
    finally:
        asyncio.run(registry.close())
    if as_json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _print(doc)
    return 1 if doc["failed"] else 0


def _print(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=f"plugins of agent {doc['agent']}")
    table.add_column("plugin")
    table.add_column("status")
    table.add_column("kinds / reason")
    for p in doc["loaded"]:
        extra = ", ".join(p["kinds"])
        if p["name"] == BATCH:
            extra += f" (scheduler {doc['scheduler']}; partitions {','.join(doc['partitions'])})"
        table.add_row(p["name"], "[green]loaded[/green]", extra)
    # reasons are plain text: `pip install 'zambeze-mesh[dask]'` must not be read as markup
    for name, reason in doc["failed"].items():
        table.add_row(escape(name), "[red]failed[/red]", escape(reason))
    for name, reason in doc.get("missing", {}).items():
        table.add_row(escape(name), "[yellow]not installed[/yellow]", escape(reason))
    for name, reason in doc["disabled"].items():
        table.add_row(escape(name), "[yellow]disabled[/yellow]", escape(reason))
    console.print(table)
    for kind, plugin in doc["routed"].items():
        console.print(f"{kind} activities run through {plugin}")
