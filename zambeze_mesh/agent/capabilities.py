"""What this agent advertises about itself in its signed record."""

from __future__ import annotations

import os
from pathlib import Path

from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.v1 import common_pb2


def total_memory_bytes() -> int:
    """Physical memory from ``/proc/meminfo`` (0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def build_capabilities(
    config: AgentConfig,
    *,
    plugins: list[str],
    free_slots: int,
    data_dir: Path,
    home: Path,
    scheduler: str = "",
    partitions: list[str] | None = None,
) -> common_pb2.Capabilities:
    """The capability block of this agent's record."""
    # Relative roots are relative to the agent home, as the data service reads them.
    roots = [str(data_dir)] + [str((home / r).absolute()) for r in config.exported_roots]
    return common_pb2.Capabilities(
        plugins=sorted(plugins),
        cpus=os.cpu_count() or 1,
        memory_bytes=total_memory_bytes(),
        gpus=0,
        slots=config.slots,
        free_slots=max(0, free_slots),
        labels=config.labels,
        data_roots=roots,
        transfer_methods=config.transfer_methods,
        scheduler=scheduler,
        partitions=partitions or [],
        accept_functions=config.accept_functions,
    )
