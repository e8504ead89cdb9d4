"""Shared pieces of the workflow-manager plugins (``dask``, ``parsl``).

Pure helpers: parse an activity's ``wf_config_json`` and build the environment a
workflow script runs with. The script reads it back through :mod:`zambeze_mesh.wf`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import InvalidInput, Unavailable

#: JSON of the activity's ``wf_config`` (an object; ``{}`` when none was given).
ENV_WF_CONFIG = "ZMESH_WF_CONFIG"
#: The workflow manager running the script (``dask``, ``parsl``, ...).
ENV_WF_MANAGER = "ZMESH_WF_MANAGER"
#: Address of the Dask scheduler the script should connect to.
ENV_DASK_SCHEDULER = "ZMESH_DASK_SCHEDULER"
#: How many slots (workers) the agent gives a workflow.
ENV_SLOTS = "ZMESH_SLOTS"


def wf_config_from_env() -> dict[str, Any]:
    """The running activity's ``wf_config`` (``{}`` when it has none or outside the mesh)."""
    text = os.environ.get(ENV_WF_CONFIG, "")
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def slots_from_env() -> int:
    """How many workers the agent gives the running workflow (CPU count outside the mesh)."""
    try:
        return max(1, int(os.environ.get(ENV_SLOTS, "")))
    except ValueError:
        return os.cpu_count() or 1


def working_dir_from_env() -> Path:
    """The running activity's working dir (the current dir outside the mesh)."""
    return Path(os.environ.get("ZMESH_WORKING_DIR", "."))


def parse_wf_config(text: str) -> dict[str, Any]:
    """The ``wf_config`` object of an activity (``{}`` for an empty string).

    Raises InvalidInput when the text is not JSON or not a JSON object.
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"wf_config is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"wf_config must be a JSON object, got {type(value).__name__}")
    return value


def with_venv_path(env: Mapping[str, str], python: str = sys.executable) -> dict[str, str]:
    """``env`` with the interpreter's bin dir first on PATH.

    Parsl's HTEX starts ``interchange.py`` and ``process_worker_pool.py`` and
    Dask's nannies start workers by name: they must come from this venv.
    """
    out = dict(env)
    bindir = os.path.dirname(os.path.abspath(python))
    parts = [p for p in out.get("PATH", os.defpath).split(os.pathsep) if p]
    if bindir not in parts:
        parts.insert(0, bindir)
    out["PATH"] = os.pathsep.join(parts)
    return out


def workflow_env(
    base: Mapping[str, str], manager: str, config: Mapping[str, Any], slots: int
) -> dict[str, str]:
    """The variables every workflow script gets on top of ``base``."""
    env = with_venv_path(base)
    env[ENV_WF_MANAGER] = manager
    env[ENV_WF_CONFIG] = json.dumps(dict(config))
    env[ENV_SLOTS] = str(slots)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def installed_version(dist: str) -> str:
    """Version of an installed distribution; raises Unavailable when it is not installed.

    Cheaper than importing it: the agent does not need Dask or Parsl in its own process.
    """
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = importlib.util.find_spec(dist) is not None
        ver = version(dist)
    except (PackageNotFoundError, ValueError):
        found = False
    if not found:
        raise Unavailable(f"{dist} is not installed (pip install 'zambeze-mesh[{_EXTRA[dist]}]')")
    return ver


_EXTRA = {"distributed": "dask", "parsl": "parsl", "psij-python": "batch", "psij": "batch"}


def option_slots(options: Mapping[str, Any]) -> int:
    """The ``slots`` plugin option (default: the CPU count), at least 1."""
    try:
        slots = int(options.get("slots", os.cpu_count() or 1))
    except (TypeError, ValueError):
        bad = options.get("slots")
        raise InvalidInput(f"option 'slots' must be an integer, got {bad!r}") from None
    if slots < 1:
        raise InvalidInput("option 'slots' must be at least 1")
    return slots
