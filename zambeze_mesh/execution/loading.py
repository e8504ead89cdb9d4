"""Load an agent's plugin registry from its config (agent and ``zmesh plugins`` share this).

Options derived from the config: ``python.accept_functions``, ``dask.slots`` /
``parsl.slots`` (= the agent's slots) and the ``batch`` plugin's scheduler,
queue, account and walltime. Without a ``scheduler`` the ``batch`` plugin is not
loaded; with one, :class:`SchedulerRegistry` sends ``shell`` and ``python``
activities to ``batch`` (the agent still advertises ``shell`` and ``python``, so
placement is unchanged: it is *how* they run that differs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zambeze_mesh.execution.plugin import Plugin
from zambeze_mesh.execution.registry import PluginRegistry

if TYPE_CHECKING:
    from zambeze_mesh.settings.config import AgentConfig

BATCH = "batch"


class SchedulerRegistry(PluginRegistry):
    """A registry that prefers the ``batch`` plugin for the kinds it runs."""

    def for_kind(self, kind: str, plugin_name: str | None = None) -> Plugin:
        """``batch`` for shell/python activities not pinned to another plugin."""
        batch = self.loaded.get(BATCH)
        if batch is not None and kind in batch.kinds and plugin_name in (None, "", kind, BATCH):
            return batch
        return super().for_kind(kind, plugin_name)


def plugin_options(cfg: AgentConfig, data_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Constructor options of the built-in plugins, from the agent config."""
    opts: dict[str, dict[str, Any]] = {
        "python": {"accept_functions": cfg.accept_functions},
        "dask": {"slots": cfg.slots},
        "parsl": {"slots": cfg.slots},
    }
    if cfg.scheduler:
        batch: dict[str, Any] = {
            "scheduler": cfg.scheduler,
            "queue": cfg.queue,
            "account": cfg.account,
            "walltime": cfg.walltime,
            "accept_functions": cfg.accept_functions,
        }
        if data_dir is not None:
            batch["work_dir"] = str(data_dir / "batch")
        opts[BATCH] = batch
    return opts


def load_registry(cfg: AgentConfig, data_dir: Path | None = None) -> PluginRegistry:
    """Load the plugins ``cfg`` asks for (see the module docstring)."""
    disabled = list(cfg.disabled_plugins)
    if not cfg.scheduler:
        disabled.append(BATCH)
    cls = SchedulerRegistry if cfg.scheduler else PluginRegistry
    return cls.load(extra=cfg.plugins, disabled=disabled, options=plugin_options(cfg, data_dir))


def scheduler_facts(registry: PluginRegistry) -> tuple[str, list[str]]:
    """``(scheduler, partitions)`` to advertise: from the loaded ``batch`` plugin, else empty."""
    batch = registry.loaded.get(BATCH)
    if batch is None:
        return "", []
    return str(getattr(batch, "scheduler", "")), list(getattr(batch, "partitions", []))
