"""An example zambeze-mesh plugin: ``WFActivity(wf_manager="hello")`` writes a greeting.

Install it next to zambeze-mesh (``pip install -e .``); agents started afterwards
load it through the ``zambeze_mesh.plugins`` entry point and advertise ``hello``,
so activities that ask for it are placed only on them.

The greeting goes to ``<output dir>/hello.txt``: ``hello, WHO from AGENT-DIR``,
where WHO is ``wf_config["who"]``, else the first line of the ``wf_uri`` file,
else ``world``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from zambeze_mesh.execution.model import Outcome, RunContext, RunRequest
from zambeze_mesh.execution.plugin import BasePlugin

__version__ = "0.1.0"


class HelloPlugin(BasePlugin):
    """Runs workflow activities whose wf_manager is ``hello``."""

    name = "hello"
    kinds = {"workflow"}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.greeting = str(self.options.get("greeting", "hello"))

    def capabilities(self) -> dict[str, str]:
        """The plugin's version."""
        return {"version": __version__}

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:
        """Write the greeting file into the output dir."""
        spec = req.spec.workflow
        self.prepare_dirs(req)
        await ctx.emit("RUNNING", "saying hello", {})
        config = json.loads(spec.wf_config_json) if spec.wf_config_json else {}
        who = str(config.get("who", ""))
        script = await self.resolve_script(req, ctx, spec.wf_uri)
        if not who and script is not None and script.is_file():
            lines = script.read_text().splitlines()
            who = lines[0].strip() if lines else ""
        text = f"{self.greeting}, {who or 'world'} from {req.agent_dir.name}\n"
        out = req.output_dir / "hello.txt"
        out.write_text(text)
        return Outcome("SUCCEEDED", 0, "greeted", stdout_tail=text, detail={"path": str(out)})
