"""Parsl configuration from a WFActivity's ``wf_config`` dict.

:func:`check_parsl_config` validates the dict without importing Parsl (the agent
calls it before starting anything); :func:`build_parsl_config` turns it into a
``parsl.config.Config`` inside the workflow process.

Recognized keys (all optional; other keys are left to the script)::

    executor          "htex" (HighThroughputExecutor, default) | "threads"
    provider          "local" (default) | "slurm" | "pbspro" | "lsf"
    max_workers_per_node, cores_per_worker           (htex; default workers = slots)
    address           interface workers connect to (default 127.0.0.1)
    run_dir           default <working dir>/runinfo
    retries           app retries (default 0)
    launcher          "single" | "srun" | "simple" | "mpiexec" | "jsrun" | "aprun"
    partition, account, qos, constraint, walltime, scheduler_options, worker_init,
    nodes_per_block, init_blocks, min_blocks, max_blocks, cores_per_node,
    mem_per_node, queue, project                      (batch providers)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.execution.wfconfig import slots_from_env, wf_config_from_env, working_dir_from_env

EXECUTORS = ("htex", "threads")
PROVIDERS = ("local", "slurm", "pbspro", "lsf")
LAUNCHERS = {
    "single": "SingleNodeLauncher",
    "srun": "SrunLauncher",
    "simple": "SimpleLauncher",
    "mpiexec": "MpiExecLauncher",
    "jsrun": "JsrunLauncher",
    "aprun": "AprunLauncher",
}
_INT_KEYS = (
    "max_workers_per_node",
    "retries",
    "nodes_per_block",
    "init_blocks",
    "min_blocks",
    "max_blocks",
    "cores_per_node",
    "mem_per_node",
)
_STR_KEYS = (
    "address",
    "run_dir",
    "partition",
    "account",
    "qos",
    "constraint",
    "walltime",
    "scheduler_options",
    "worker_init",
    "queue",
    "project",
)
#: Which provider takes which batch keys.
_PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "local": ("nodes_per_block", "init_blocks", "min_blocks", "max_blocks", "worker_init"),
    "slurm": (
        "partition",
        "account",
        "qos",
        "constraint",
        "walltime",
        "scheduler_options",
        "worker_init",
        "nodes_per_block",
        "init_blocks",
        "min_blocks",
        "max_blocks",
        "cores_per_node",
        "mem_per_node",
    ),
    "pbspro": (
        "account",
        "queue",
        "walltime",
        "scheduler_options",
        "worker_init",
        "nodes_per_block",
        "init_blocks",
        "min_blocks",
        "max_blocks",
    ),
    "lsf": (
        "project",
        "queue",
        "walltime",
        "scheduler_options",
        "worker_init",
        "nodes_per_block",
        "init_blocks",
        "min_blocks",
        "max_blocks",
    ),
}


def check_parsl_config(cfg: Mapping[str, Any]) -> None:
    """Raise InvalidInput when the Parsl keys of ``cfg`` are wrong."""
    executor = cfg.get("executor", "htex")
    if executor not in EXECUTORS:
        raise InvalidInput(
            f"wf_config executor {executor!r} is not supported (use one of {', '.join(EXECUTORS)})"
        )
    provider = cfg.get("provider", "local")
    if provider not in PROVIDERS:
        raise InvalidInput(
            f"wf_config provider {provider!r} is not supported (use one of {', '.join(PROVIDERS)})"
        )
    if executor == "threads" and provider != "local":
        raise InvalidInput("wf_config executor 'threads' runs locally: it takes no provider")
    launcher = cfg.get("launcher")
    if launcher is not None and launcher not in LAUNCHERS:
        raise InvalidInput(
            f"wf_config launcher {launcher!r} is not supported (use one of {', '.join(LAUNCHERS)})"
        )
    for key in _INT_KEYS:
        if key in cfg and (isinstance(cfg[key], bool) or not isinstance(cfg[key], int)):
            raise InvalidInput(f"wf_config {key} must be an integer, got {cfg[key]!r}")
        if key in cfg and cfg[key] < 0:
            raise InvalidInput(f"wf_config {key} must not be negative")
    for key in _STR_KEYS:
        if key in cfg and not isinstance(cfg[key], str):
            raise InvalidInput(f"wf_config {key} must be a string, got {cfg[key]!r}")
    if "cores_per_worker" in cfg and not isinstance(cfg["cores_per_worker"], int | float):
        raise InvalidInput("wf_config cores_per_worker must be a number")


def build_parsl_config(cfg: Mapping[str, Any], slots: int, working_dir: str) -> Any:
    """A ``parsl.config.Config`` for ``cfg`` (validated first)."""
    check_parsl_config(cfg)
    from parsl.config import Config

    run_dir = cfg.get("run_dir") or os.path.join(working_dir, "runinfo")
    retries = int(cfg.get("retries", 0))
    if cfg.get("executor", "htex") == "threads":
        from parsl.executors import ThreadPoolExecutor

        workers = int(cfg.get("max_workers_per_node", slots))
        return Config(
            executors=[ThreadPoolExecutor(label="threads", max_threads=workers)],
            run_dir=run_dir,
            retries=retries,
            usage_tracking=0,
        )
    from parsl.executors import HighThroughputExecutor

    htex_kw: dict[str, Any] = {
        "label": "htex",
        "address": cfg.get("address", "127.0.0.1"),
        "max_workers_per_node": int(cfg.get("max_workers_per_node", slots)),
        "provider": _provider(cfg),
        "heartbeat_period": 5,
        "heartbeat_threshold": 30,
        "poll_period": 10,
    }
    if "cores_per_worker" in cfg:
        htex_kw["cores_per_worker"] = float(cfg["cores_per_worker"])
    return Config(
        executors=[HighThroughputExecutor(**htex_kw)],
        run_dir=run_dir,
        retries=retries,
        usage_tracking=0,
        strategy="none" if cfg.get("provider", "local") == "local" else "simple",
    )


def _provider(cfg: Mapping[str, Any]) -> Any:
    import parsl.launchers
    import parsl.providers

    name = cfg.get("provider", "local")
    kw: dict[str, Any] = {k: cfg[k] for k in _PROVIDER_KEYS[name] if k in cfg}
    if "launcher" in cfg:
        kw["launcher"] = getattr(parsl.launchers, LAUNCHERS[cfg["launcher"]])()
    if name == "local":
        kw.setdefault("init_blocks", 1)
        kw.setdefault("max_blocks", 1)
        return parsl.providers.LocalProvider(**kw)
    if name == "slurm":
        return parsl.providers.SlurmProvider(**kw)
    if name == "pbspro":
        return parsl.providers.PBSProProvider(**kw)
    return parsl.providers.LSFProvider(**kw)


def parsl_config_from_env() -> Any:
    """The Parsl config of the running activity (its ``wf_config``, slots, working dir)."""
    return build_parsl_config(
        wf_config_from_env(), slots_from_env(), str(working_dir_from_env().absolute())
    )


def load_parsl() -> Any:
    """The loaded Parsl DataFlowKernel (loading :func:`parsl_config_from_env` if none is)."""
    import parsl

    try:
        return parsl.dfk()
    except Exception:  # parsl raises NoDataFlowKernelError when none is loaded
        return parsl.load(parsl_config_from_env())


def cleanup_parsl() -> None:
    """Shut the loaded Parsl DataFlowKernel down (no-op when none is loaded)."""
    import parsl

    try:
        dfk = parsl.dfk()
    except Exception:
        return
    dfk.cleanup()
    try:
        parsl.clear()
    except Exception:  # already cleared by cleanup() in recent Parsl
        pass
