"""The README's "Writing a campaign" example builds the campaign it describes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[3] / "README.md"


def test_writing_a_campaign_example_declares_its_dependencies() -> None:
    section = README.read_text().split("## Writing a campaign", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "no python example under 'Writing a campaign'"
    # everything up to (not including) dispatch: building needs no agent
    build = code.group(1).split("campaign.dispatch()")[0]
    scope: dict[str, object] = {}
    exec(compile(build, "README.md", "exec"), scope)
    campaign: Any = scope["campaign"]
    specs = {a.name: a.to_spec() for a in campaign._activities.values()}
    assert list(specs["report"].depends_on) == ["train ml models", "square"]
    assert specs["train ml models"].data_uris[0] == "@output:create microscope images"
