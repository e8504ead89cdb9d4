"""``parsl`` plugin: run a WFActivity's script with a Parsl configuration loaded.

The configuration comes from ``wf_config`` (see
:mod:`zambeze_mesh.execution.parsl_config`): by default a local
HighThroughputExecutor with ``max_workers_per_node = slots`` on 127.0.0.1 and its
run dir under the working dir; ``{"provider": "slurm", "partition": ...}`` sends
the workers through a batch scheduler instead. The config is validated here,
before anything starts; the script runs in
``python -m zambeze_mesh.execution.wf_runner parsl SCRIPT ARGS...`` which loads it,
runs the script as ``__main__`` and cleans Parsl up. PATH starts with this
interpreter's bin dir so that HTEX finds ``interchange.py`` and
``process_worker_pool.py``.

Options: ``slots`` (default CPU count), ``python``, ``grace_s``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.execution.model import Outcome, RunContext, RunRequest
from zambeze_mesh.execution.parsl_config import check_parsl_config
from zambeze_mesh.execution.plugin import BasePlugin
from zambeze_mesh.execution.wfconfig import (
    installed_version,
    option_slots,
    parse_wf_config,
    workflow_env,
)


class ParslPlugin(BasePlugin):
    """Runs ``WFActivity(wf_manager="parsl")``; see the module docstring."""

    name = "parsl"
    kinds = {"workflow"}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        # Fail at load time when parsl is missing, without importing it into the agent.
        self.version = installed_version("parsl")
        self.slots = option_slots(self.options)
        self.python = str(self.options.get("python", sys.executable))

    def capabilities(self) -> dict[str, str]:
        """Parsl version and default worker count."""
        return {"version": self.version, "workers": str(self.slots)}

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:
        """Validate ``wf_config`` and run the script through the runner."""
        spec = req.spec.workflow
        with self.track(req) as job:
            self.prepare_dirs(req)
            try:
                config = parse_wf_config(spec.wf_config_json)
                check_parsl_config(config)
            except InvalidInput as exc:
                return Outcome("FAILED", message=str(exc))
            script = await self.resolve_script(req, ctx, spec.wf_uri)
            if script is None:
                return Outcome("FAILED", message=f"parsl activity {req.activity!r} has no wf_uri")
            if not script.is_file():
                return Outcome("FAILED", message=f"workflow script not found: {script}")
            env = workflow_env(self.build_env(req, {}), "parsl", config, self.slots)
            argv = [
                self.python,
                "-m",
                "zambeze_mesh.execution.wf_runner",
                "parsl",
                str(script),
                *spec.args,
            ]
            outcome = await self.run_process(req, ctx, job, argv, env)
            outcome.detail["parsl_executor"] = str(config.get("executor", "htex"))
            outcome.detail["parsl_provider"] = str(config.get("provider", "local"))
            if outcome.state == "FAILED" and "Traceback" in outcome.stderr_tail:
                last = outcome.stderr_tail.strip().splitlines()[-1]
                outcome.message = f"{outcome.message}: {last}"
            return outcome
