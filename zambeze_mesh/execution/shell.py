"""``shell`` plugin: run a ShellActivity's command with ``/bin/sh -c``."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.execution.model import Outcome, RunContext, RunRequest
from zambeze_mesh.execution.plugin import BasePlugin

SHELL = "/bin/sh"


def make_executable(path: Path) -> None:
    """Add the execute bits wherever the read bits are set."""
    mode = path.stat().st_mode
    readable = mode & (stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    os.chmod(path, mode | (readable >> 2) | stat.S_IXUSR)


def _has_shebang(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"#!"


class ShellPlugin(BasePlugin):
    """Runs ``spec.shell.cmd`` with ``/bin/sh -c`` in the working dir.

    When the activity has a script, its local path is in ``$ZMESH_SCRIPT`` and
    it is made executable; with no command the script itself is run (through
    ``/bin/sh`` when it has no ``#!`` line). Options: ``shell`` (default
    ``/bin/sh``), ``grace_s`` (seconds between SIGTERM and SIGKILL).
    """

    name = "shell"
    kinds = {"shell"}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.shell = str(self.options.get("shell", SHELL))

    def capabilities(self) -> dict[str, str]:
        """The shell used."""
        return {"path": self.shell}

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:
        """Run the command (or the script) and report how it ended."""
        spec = req.spec.shell
        with self.track(req) as job:
            self.prepare_dirs(req)
            script = await self.resolve_script(req, ctx, spec.script_uri)
            env = self.build_env(req, spec.env)
            if script is not None:
                if not script.is_file():
                    return Outcome("FAILED", message=f"script not found: {script}")
                make_executable(script)
                env["ZMESH_SCRIPT"] = str(script)
            if spec.cmd:
                argv = [self.shell, "-c", spec.cmd]
            elif script is not None:
                argv = [str(script)] if _has_shebang(script) else [self.shell, str(script)]
            else:
                raise InvalidInput(f"shell activity {req.activity!r} has neither cmd nor script")
            return await self.run_process(req, ctx, job, argv, env)
