"""Foundation, through the real `zmesh` CLI and real agent processes on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.helpers.procs import ProcMesh, zmesh


def _tree_digest(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _db_dump(home: Path) -> list[str]:
    db = sqlite3.connect(home / "zmesh.db")
    try:
        return list(db.iterdump())
    finally:
        db.close()


def _all_alive(mesh: ProcMesh, names: set[str]) -> bool:
    for a in mesh.agents.values():
        st = a.statuses()
        if not all(st.get(n) == "alive" for n in names):
            return False
    return True


def test_three_agents_join_and_restart_keeps_identity(procmesh: ProcMesh) -> None:
    a = procmesh.init("a")
    a.start()
    b = procmesh.join("b", a)
    b.start()
    c = procmesh.join("c", b)  # through a seed without the CA key: forwarded to a
    c.start()
    names = {"a", "b", "c"}
    procmesh.wait_for(lambda: _all_alive(procmesh, names), 30, "all three alive everywhere")
    for agent in (a, b, c):
        docs = agent.members()
        assert {d["name"] for d in docs} == names
        assert all({"name", "address", "status"} <= d.keys() for d in docs)

    cert_before = zmesh("agent", "status", "--json", home=b.home).stdout
    db_identity = (b.home / "config.toml").read_text()
    b.stop()
    assert zmesh("agent", "status", home=b.home, check=False).returncode == 1
    b.start()
    assert (b.home / "config.toml").read_text() == db_identity
    assert json.loads(cert_before)["name"] == "b"
    procmesh.wait_for(lambda: _all_alive(procmesh, names), 30, "b back without re-join")


def test_second_agent_on_same_home_is_refused(procmesh: ProcMesh) -> None:
    a = procmesh.init("a")
    a.start()
    before = (a.home / "config.toml").read_text()
    proc = zmesh("agent", "start", "--foreground", home=a.home, check=False, timeout=30)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zmesh: error:"), proc.stderr
    assert "already running" in err[0]
    assert (a.home / "config.toml").read_text() == before
    assert a.statuses() == {"a": "alive"}  # the first one still serves


def test_port_in_use_is_refused_and_nothing_written(procmesh: ProcMesh) -> None:
    a = procmesh.init("a")
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        blocker.bind(("127.0.0.1", a.port))
        blocker.listen()
        before = _tree_digest(a.home)
        db_before = _db_dump(a.home)
        proc = zmesh("agent", "start", "--foreground", home=a.home, check=False, timeout=30)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen on" in lines[0], proc.stderr
    after = _tree_digest(a.home)
    for name in ("agent.pid", "agent.ports", "agent.sock"):
        assert name not in after
    # Config unchanged and the store's content identical (its log line and the empty
    # lock file are the only traces of the refused start).
    assert after["config.toml"] == before["config.toml"]
    assert _db_dump(a.home) == db_before


def test_init_twice_is_refused(procmesh: ProcMesh) -> None:
    a = procmesh.init("a")
    proc = zmesh("init", "--name", "x", "--listen", "127.0.0.1:1", home=a.home, check=False)
    assert proc.returncode != 0 and "already holds an agent" in proc.stderr


@pytest.mark.parametrize("fault", ["wrong-secret", "expired", "revoked", "other-mesh"])
def test_bad_tokens_are_refused_and_leave_home_unchanged(
    procmesh: ProcMesh, tmp_path: Path, fault: str
) -> None:
    a = procmesh.init("a")
    a.start()
    token = procmesh.token(a, ttl="1s" if fault == "expired" else "1h")
    if fault == "wrong-secret":
        token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    elif fault == "expired":
        time.sleep(1.5)
    elif fault == "revoked":
        zmesh("token", "revoke", token, home=a.home)
    elif fault == "other-mesh":
        other = ProcMesh(tmp_path / "other")
        o = other.init("o")
        token = other.token(o)
    joiner = tmp_path / "joiner"
    joiner.mkdir()
    before = _tree_digest(joiner)
    log_before = (a.home / "agent.log").read_text()
    proc = zmesh(
        "join",
        a.address,
        "--name",
        "j",
        "--listen",
        "127.0.0.1:0",
        home=joiner,
        check=False,
        env={"ZMESH_TOKEN": token},
    )
    assert proc.returncode != 0
    msg = proc.stderr.strip()
    assert msg.startswith("zmesh: error:") and len(msg.splitlines()) == 1, msg
    expected = {
        "wrong-secret": "unknown join token",  # the token id derives from the secret
        "expired": "expired",
        "revoked": "revoked",
        "other-mesh": "does not admit into the mesh of that join token",
    }[fault]
    assert expected in msg
    assert _tree_digest(joiner) == before
    assert "j" not in a.statuses()
    new_log = (a.home / "agent.log").read_text()[len(log_before) :]
    events = [json.loads(line)["event"] for line in new_log.splitlines() if line.strip()]
    if fault == "other-mesh":
        # The seed refused to pin for another CA's digest: it never saw a proof.
        assert "join.pin" not in events and "join.accepted" not in events
    else:
        assert "join.refused" in events


def test_members_watch_follows_changes(procmesh: ProcMesh) -> None:
    """``zmesh members --watch --json`` prints a new view each time membership changes."""
    import subprocess
    import sys

    a = procmesh.init("a")
    a.start()
    cmd = [
        sys.executable,
        "-m",
        "zambeze_mesh.cli.main",
        "--home",
        str(a.home),
        "members",
        "--watch",
        "--json",
    ]
    watcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert [m["name"] for m in first] == ["a"]
        b = procmesh.join("b", a)
        b.start()
        for _ in range(20):
            view = {m["name"]: m["status"] for m in json.loads(watcher.stdout.readline())}
            if view.get("b") == "alive":
                break
        assert view == {"a": "alive", "b": "alive"}
    finally:
        watcher.terminate()
        watcher.wait(10)
