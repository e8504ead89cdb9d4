"""Helpers for workflow scripts run by a WFActivity (``dask``, ``parsl`` plugins).

Inside a script started by the mesh::

    import zambeze_mesh.wf as zwf

    client = zwf.dask_client()          # Dask: connect to the agent's cluster
    futures = client.map(f, range(10))

    cfg = zwf.config()                  # the activity's wf_config dict
    out = zwf.output_dir()              # where outputs go (@outputdir)

For Parsl the agent loads the configuration before the script runs; a script
that wants to be runnable on its own too can call :func:`parsl_load` (it returns
the kernel already loaded, or loads :func:`parsl_config`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zambeze_mesh.execution.parsl_config import (
    cleanup_parsl,
    load_parsl,
    parsl_config_from_env,
)
from zambeze_mesh.execution.wfconfig import (
    ENV_DASK_SCHEDULER,
    ENV_WF_MANAGER,
    slots_from_env,
    wf_config_from_env,
    working_dir_from_env,
)

__all__ = [
    "config",
    "dask_client",
    "inputs",
    "manager",
    "output_dir",
    "parsl_cleanup",
    "parsl_config",
    "parsl_load",
    "slots",
    "working_dir",
]


def config() -> dict[str, Any]:
    """The activity's ``wf_config`` (``{}`` when it has none or outside the mesh)."""
    return wf_config_from_env()


def manager() -> str:
    """The workflow manager running this script (``"dask"``, ``"parsl"``; ``""`` outside)."""
    return os.environ.get(ENV_WF_MANAGER, "")


def slots() -> int:
    """How many workers the agent gives this workflow (CPU count outside the mesh)."""
    return slots_from_env()


def output_dir() -> Path:
    """The activity's output dir (``@outputdir``; the current dir outside the mesh)."""
    return Path(os.environ.get("ZMESH_OUTPUT_DIR", "."))


def working_dir() -> Path:
    """The activity's working dir (the current dir outside the mesh)."""
    return working_dir_from_env()


def inputs() -> list[Path]:
    """Local paths of the activity's staged ``data_uris``, in order."""
    text = os.environ.get("ZMESH_INPUTS", "")
    return [Path(p) for p in text.split(os.pathsep) if p]


def dask_client(**kwargs: Any) -> Any:
    """A ``distributed.Client`` connected to the scheduler the agent chose.

    That is ``wf_config["scheduler_address"]`` when given, else the agent's own
    LocalCluster (``$ZMESH_DASK_SCHEDULER``). Outside the mesh, with neither
    set, a small LocalCluster is started. ``kwargs`` go to ``Client``.
    """
    from distributed import Client

    address = config().get("scheduler_address") or os.environ.get(ENV_DASK_SCHEDULER, "")
    if address:
        return Client(address, **kwargs)
    return Client(
        n_workers=slots(), threads_per_worker=1, dashboard_address=None, host="127.0.0.1", **kwargs
    )


def parsl_config() -> Any:
    """The ``parsl.config.Config`` built from this activity's ``wf_config``.

    See :mod:`zambeze_mesh.execution.parsl_config` for the keys (default: a
    local HighThroughputExecutor with ``slots()`` workers on 127.0.0.1).
    """
    return parsl_config_from_env()


def parsl_load() -> Any:
    """The loaded Parsl DataFlowKernel (loading :func:`parsl_config` if none is)."""
    return load_parsl()


def parsl_cleanup() -> None:
    """Shut the loaded Parsl DataFlowKernel down (no-op when none is loaded)."""
    cleanup_parsl()
