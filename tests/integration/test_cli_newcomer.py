"""The rough edges a newcomer meets in the CLI, through the real `zmesh` and real agents."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers.procs import ProcAgent, ProcMesh, zmesh
from zambeze_mesh.campaign.refs import check_name
from zambeze_mesh.cli.campaigns import match_id
from zambeze_mesh.cli.daemon import process_alive
from zambeze_mesh.errors import InvalidInput, NotFound

QUICK = """
import zambeze_mesh as zm
c = zm.Campaign("a campaign with a rather long name that a table would like to squeeze")
c.add_activities([zm.ShellActivity("quick one", cmd="true")])
print("CAMPAIGN", c.dispatch(), flush=True)
"""

SLOW = """
import zambeze_mesh as zm
c = zm.Campaign("slow")
c.add_activities([zm.ShellActivity("nap", cmd="sleep 60")])
print("CAMPAIGN", c.dispatch(), flush=True)
"""


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _cid(out: str) -> str:
    return next(ln.split()[1] for ln in out.splitlines() if ln.startswith("CAMPAIGN"))


@pytest.fixture
def agent(procmesh: ProcMesh) -> ProcAgent:
    a = procmesh.init("solo")
    a.start()
    return a


def test_status_shows_real_duration_and_takes_prefixes(agent: ProcAgent, tmp_path: Path) -> None:
    out = zmesh("run", str(_script(tmp_path, "q.py", QUICK)), home=agent.home, timeout=120)
    cid = _cid(out.stdout)
    doc = json.loads(zmesh("status", cid[:6], "--json", home=agent.home).stdout)
    assert doc["campaign_id"] == cid and doc["state"] == "SUCCEEDED"
    assert doc["created_unix_ms"] <= doc["finished_unix_ms"] <= time.time() * 1000
    duration = doc["finished_unix_ms"] - doc["created_unix_ms"]

    def shown() -> str:
        table = zmesh("status", cid[:5], home=agent.home, env={"COLUMNS": "200"}).stdout
        match = re.search(rf"\[{cid}\] SUCCEEDED\s+(\S+)", table)
        assert match, table
        return match.group(1)

    first = shown()
    time.sleep(1.5)
    assert shown() == first  # an ended campaign's clock does not keep running
    assert first == f"{duration / 1000:.1f}s"
    cancelled = zmesh("cancel", cid[:4], home=agent.home)
    assert f"campaign {cid}: SUCCEEDED" in cancelled.stdout  # already over: nothing to cancel

    missing = zmesh("status", "zz", home=agent.home, check=False)
    assert missing.returncode == NotFound.exit_code
    assert "no campaign 'zz'" in missing.stderr and "Traceback" not in missing.stderr


def test_campaigns_table_never_truncates_ids(agent: ProcAgent, tmp_path: Path) -> None:
    script = _script(tmp_path, "q.py", QUICK)
    ids = [_cid(zmesh("run", str(script), home=agent.home, timeout=120).stdout) for _ in range(2)]
    for columns in ("80", "60"):
        table = zmesh("campaigns", home=agent.home, env={"COLUMNS": columns}).stdout
        for cid in ids:
            assert cid in table, table


def test_match_id_prefix_rules() -> None:
    ids = ["ab12cd34ef56aa00", "ab12ffff00001111", "0123456789abcdef"]
    assert match_id("0", ids) == "0123456789abcdef"
    assert match_id("ab12c", ids) == "ab12cd34ef56aa00"
    assert match_id("ab12ffff00001111", ids) == "ab12ffff00001111"
    with pytest.raises(InvalidInput, match=r"ambiguous.*ab12cd34ef56aa00, ab12ffff00001111"):
        match_id("ab12", ids)
    assert match_id("ff", ids) is None  # then asked for as a full id
    with pytest.raises(InvalidInput):
        match_id("", ids)


def test_stopped_agent_gives_one_clear_message(procmesh: ProcMesh, tmp_path: Path) -> None:
    a = procmesh.init("idle")
    script = _script(tmp_path, "q.py", QUICK)
    for args in (
        ("run", str(script)),
        ("members",),
        ("campaigns",),
        ("status", "abc"),
        ("cancel", "abc"),
    ):
        proc = zmesh(*args, home=a.home, check=False)
        assert proc.returncode == 8, (args, proc.stderr)
        assert proc.stderr.strip() == (
            f"zmesh: error: no agent is running on {a.home} "
            f"(start one with `zmesh --home {a.home} agent start`)"
        ), args
        assert proc.stdout == ""


def test_syntax_error_in_campaign_file_is_one_line(procmesh: ProcMesh, tmp_path: Path) -> None:
    a = procmesh.init("idle")
    bad = tmp_path / "broken.py"
    bad.write_text("import zambeze_mesh as zm\n\nc = = zm.Campaign('x')\n")
    proc = zmesh("run", str(bad), home=a.home, check=False)
    assert proc.returncode == InvalidInput.exit_code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"zmesh: error: {bad}:3:"), lines
    assert "Traceback" not in proc.stderr and "runpy" not in proc.stderr


def test_ctrl_c_on_run_says_campaign_keeps_running(agent: ProcAgent, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(agent.home), "run"]
    proc = subprocess.Popen(
        [*cmd, str(_script(tmp_path, "slow.py", SLOW))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        cid = _cid(proc.stdout.readline())
        time.sleep(0.5)  # now following the campaign
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "the mesh keeps running" in err and cid in err
    assert f"zmesh --home {agent.home} status {cid} --watch" in err
    assert f"zmesh --home {agent.home} cancel {cid}" in err
    assert "Traceback" not in err
    doc = json.loads(zmesh("status", cid, "--json", home=agent.home).stdout)
    assert doc["state"] == "RUNNING"
    assert "CANCELLED" in zmesh("cancel", cid, home=agent.home).stdout


def test_data_ls_of_agent_top_directory(agent: ProcAgent, tmp_path: Path) -> None:
    local = tmp_path / "hello.txt"
    local.write_text("hi\n")
    zmesh("data", "put", "--quiet", str(local), "solo://inbox/hello.txt", home=agent.home)
    doc = json.loads(zmesh("data", "ls", "solo://", "--json", home=agent.home).stdout)
    entries = {e["path"]: e["is_dir"] for e in doc["entries"]}
    assert entries.get("inbox") is True, entries
    table = zmesh("data", "ls", "solo://", home=agent.home).stdout
    assert "inbox" in table


def test_plugins_without_optional_extras(procmesh: ProcMesh, tmp_path: Path) -> None:
    """As after a plain `pip install .`: dask and parsl are not importable."""
    a = procmesh.init("plain")
    site = tmp_path / "site"
    site.mkdir()
    # Python's own way of marking a module as absent (import raises ImportError)
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.modules['distributed'] = None\nsys.modules['parsl'] = None\n"
    )
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = zmesh("plugins", home=a.home, env={**env, "COLUMNS": "200"}, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "pip install 'zambeze-mesh[dask]'" in out
    assert "pip install 'zambeze-mesh[parsl]'" in out
    for name in ("dask", "parsl"):
        assert len(re.findall(rf"^\W*{name}\b.*not installed", out, re.M)) == 1, out
    assert out.count("distributed is not installed") == 1, out
    doc = json.loads(zmesh("plugins", "--json", home=a.home, env=env).stdout)
    assert set(doc["missing"]) == {"dask", "parsl"} and doc["failed"] == {}


def test_help_texts_and_name_rule() -> None:
    run_help = zmesh("run", "-h").stdout
    assert "FILE" in run_help and "Python file that builds and dispatches" in run_help
    status_help = zmesh("status", "-h").stdout
    assert re.search(r"--json\s+print the campaign as one JSON object", status_help)
    assert "unique prefix" in status_help
    check_name("make data")  # spaces inside are allowed...
    with pytest.raises(InvalidInput, match="spaces") as info:
        check_name("make/data")  # ...and the message says so
    assert "try 'make_data'" in str(info.value)


def test_agent_stop_returns_after_exit_and_logs_no_tracebacks(agent: ProcAgent) -> None:
    pid = agent.pid
    assert pid is not None and process_alive(pid)
    out = zmesh("agent", "stop", home=agent.home).stdout
    assert f"agent (pid {pid}) stopped" in out
    assert not process_alive(pid)  # gone when `stop` returns, not a moment later
    agent.pid = None
    log = (agent.home / "agent.out").read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
