"""The Python API and the campaign CLI against real agent processes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.helpers.procs import ProcMesh, zmesh

CAMPAIGN = """
import zambeze_mesh as zm

def square(x):
    return x * x

campaign = zm.Campaign("cli campaign")
make = zm.ShellActivity("make data", cmd="echo 21 > $ZMESH_OUTPUT_DIR/n.txt")
calc = zm.PythonActivity("square it", func=square, args=[12])
use = zm.ShellActivity(
    "use data",
    cmd="cat $ZMESH_INPUT_0/n.txt > $ZMESH_OUTPUT_DIR/copy.txt",
    data_uris=[make.output_dir],
)
campaign.add_activities([make, calc, use])
cid = campaign.dispatch()
print("CAMPAIGN", cid)
campaign.poll(blocking=True)
print("RESULT", calc.future.result())
"""


def test_zmesh_run_status_campaigns(procmesh: ProcMesh, tmp_path: Path) -> None:
    a = procmesh.init("a")
    a.start()
    b = procmesh.join("b", a)
    b.start()
    procmesh.wait_for(lambda: len(a.statuses()) == 2 and len(b.statuses()) == 2, 30, "mesh")
    script = tmp_path / "campaign.py"
    script.write_text(textwrap.dedent(CAMPAIGN))
    out = zmesh("run", str(script), home=a.home, timeout=120).stdout
    assert "RESULT 144" in out
    cid = next(line.split()[1] for line in out.splitlines() if line.startswith("CAMPAIGN"))
    assert f"campaign {cid} (cli campaign): SUCCEEDED" in out

    listed = json.loads(zmesh("campaigns", "--json", home=a.home).stdout)
    assert [c["campaign_id"] for c in listed] == [cid]
    status = json.loads(zmesh("status", cid, "--json", home=a.home).stdout)
    assert status["state"] == "SUCCEEDED"
    states = {x["name"]: x["state"] for x in status["activities"]}
    assert states == {"make data": "SUCCEEDED", "square it": "SUCCEEDED", "use data": "SUCCEEDED"}
    use = next(x for x in status["activities"] if x["name"] == "use data")
    assert (Path(use["detail"]["output_dir"]) / "copy.txt").read_text().strip() == "21"
    table = zmesh("status", cid, home=a.home).stdout
    assert "square it" in table

    # --graph draws the DAG from the specs the agent returns over its API.
    drawn = zmesh("status", cid, "--graph", str(tmp_path / "g.png"), home=a.home).stdout
    assert "wrote the campaign graph" in drawn and (tmp_path / "g.png").stat().st_size > 1000
    from zambeze_mesh.campaign.client import connect
    from zambeze_mesh.campaign.loop import bridge
    from zambeze_mesh.cli.graph import dag_edges

    client = connect(home=str(a.home), set_default=False)
    try:
        specs = bridge.run(client.activity_specs(cid))
    finally:
        bridge.run(client.close())
    assert sorted(s.name for s in specs) == ["make data", "square it", "use data"]
    assert dag_edges(specs)[1] == [("make data", "use data", "output")]


def test_failing_campaign_file_exits_nonzero(procmesh: ProcMesh, tmp_path: Path) -> None:
    a = procmesh.init("a")
    a.start()
    script = tmp_path / "bad.py"
    script.write_text(
        "import zambeze_mesh as zm\n"
        "c = zm.Campaign('bad')\n"
        "c.add_activities([zm.ShellActivity('boom', cmd='exit 4')])\n"
        "c.dispatch()\n"
    )
    proc = zmesh("run", str(script), home=a.home, check=False, timeout=120)
    assert proc.returncode == 1
    assert "FAILED" in proc.stdout
