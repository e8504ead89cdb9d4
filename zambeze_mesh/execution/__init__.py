"""Execution: the plugin protocol and registry, and the built-in plugins.

An agent loads plugins with :meth:`PluginRegistry.load`, picks one with
:meth:`PluginRegistry.for_kind` and awaits ``plugin.run(RunRequest, RunContext)``
for an :class:`Outcome`. :class:`Slots` bounds how many run at once.

Names are imported lazily so that a function worker
(``python -m zambeze_mesh.execution.worker``) starts without loading protobuf,
gRPC or the plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zambeze_mesh.lazy import lazy_exports

if TYPE_CHECKING:
    from zambeze_mesh.execution.model import (
        TAIL_BYTES,
        Outcome,
        RunContext,
        RunKey,
        RunRequest,
    )
    from zambeze_mesh.execution.plugin import BasePlugin, Plugin
    from zambeze_mesh.execution.process import ProcessRun, run_process
    from zambeze_mesh.execution.python import PythonPlugin
    from zambeze_mesh.execution.registry import ENTRY_POINT_GROUP, PluginRegistry
    from zambeze_mesh.execution.shell import ShellPlugin
    from zambeze_mesh.execution.slots import Slots
    from zambeze_mesh.execution.workers import TaskResult, WorkerPool

_WHERE = {
    "TAIL_BYTES": "model",
    "Outcome": "model",
    "RunContext": "model",
    "RunKey": "model",
    "RunRequest": "model",
    "BasePlugin": "plugin",
    "Plugin": "plugin",
    "ProcessRun": "process",
    "run_process": "process",
    "PythonPlugin": "python",
    "ENTRY_POINT_GROUP": "registry",
    "PluginRegistry": "registry",
    "ShellPlugin": "shell",
    "Slots": "slots",
    "TaskResult": "workers",
    "WorkerPool": "workers",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "TAIL_BYTES",
    "BasePlugin",
    "Outcome",
    "Plugin",
    "PluginRegistry",
    "ProcessRun",
    "PythonPlugin",
    "RunContext",
    "RunKey",
    "RunRequest",
    "ShellPlugin",
    "Slots",
    "TaskResult",
    "WorkerPool",
    "run_process",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())
