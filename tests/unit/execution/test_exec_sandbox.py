"""The sandbox policy: what a run's jail binds, and that bwrap really hides the rest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.execution.sandbox import Sandbox, bwrap_problem, scrub_env

needs_bwrap = pytest.mark.skipif(bool(bwrap_problem()), reason=bwrap_problem() or "ok")


def _home(tmp_path: Path) -> tuple[Path, Path]:
    home = tmp_path / "home"
    data = home / "data"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "ca.key").write_text("SECRET")
    (home / "zmesh.db").write_text("STORE")
    (data / "runs" / "c1" / "a").mkdir(parents=True)
    (data / "runs" / "c2" / "b").mkdir(parents=True)
    (data / "runs" / "c2" / "b" / "theirs.txt").write_text("THEIRS")
    (data / "shared.txt").write_text("SHARED")
    return home, data


def test_none_mode_confines_nothing_and_says_so(tmp_path: Path) -> None:
    home, data = _home(tmp_path)
    sb = Sandbox("none", home=home, data_dir=data)
    assert sb.for_run("c1", [data / "runs" / "c1" / "a"]) is None
    assert sb.kind == "none" and "NOT sandboxed" in sb.warning
    assert sb.describe().startswith("none:")
    with pytest.raises(InvalidInput, match="sandbox must be"):
        Sandbox("maybe", home=home, data_dir=data)


def test_secret_env_is_scrubbed() -> None:
    env = scrub_env({"ZMESH_TOKEN": "t", "ZMESH_CA_PASSPHRASE_FILE": "/p", "PATH": "/bin"})
    assert env == {"PATH": "/bin"}


@needs_bwrap
def test_jail_binds_only_what_the_run_may_see(tmp_path: Path) -> None:
    """Read-only inputs inside the home (keys, store) or inside another campaign's
    runs dir are dropped; nested read-write dirs collapse to the outermost."""
    home, data = _home(tmp_path)
    outside = tmp_path / "input.txt"
    outside.write_text("INPUT")
    sb = Sandbox("auto", home=home, data_dir=data)
    work = data / "runs" / "c1" / "a"
    jail = sb.for_run(
        "c1",
        [work, work / "output"],
        [home / "keys" / "ca.key", home / "zmesh.db", data / "runs" / "c2" / "b", outside],
    )
    assert jail is not None
    assert jail.rw == (str(work),)
    assert set(jail.ro) == {str(data / "runs" / "c1"), str(outside)}
    assert jail.key == sb.for_run("c1", [work], [outside]).key  # type: ignore[union-attr]


@needs_bwrap
def test_inside_the_jail_secrets_and_other_campaigns_are_gone(tmp_path: Path) -> None:
    home, data = _home(tmp_path)
    outside = tmp_path / "input.txt"
    outside.write_text("INPUT")
    sb = Sandbox("bwrap", home=home, data_dir=data)
    work = data / "runs" / "c1" / "a"
    jail = sb.for_run("c1", [work], [outside])
    assert jail is not None
    script = (
        f"cat {home}/keys/ca.key {home}/zmesh.db {data}/runs/c2/b/theirs.txt 2>/dev/null;"
        f"cat {data}/shared.txt {outside}; echo; echo written > out.txt;"
        "ls /proc | grep -c '^[0-9]'"
    )
    res = subprocess.run(
        [*jail.prefix(cwd=work), "/bin/sh", "-c", script], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "SECRET" not in res.stdout and "STORE" not in res.stdout and "THEIRS" not in res.stdout
    assert "SHARED" in res.stdout and "INPUT" in res.stdout
    assert (work / "out.txt").read_text() == "written\n"
    # Only the sandbox's own processes are visible (no /proc/<agent>/root way around).
    assert int(res.stdout.split()[-1]) < 10


@needs_bwrap
def test_shared_function_jail_is_the_same_for_every_campaign(tmp_path: Path) -> None:
    """campaign="" (sandbox_functions = "shared"): every campaign's runs dir, one key."""
    home, data = _home(tmp_path)
    sb = Sandbox("auto", home=home, data_dir=data)
    runs = data / "runs"
    one = sb.for_run("", [runs, runs / "c1" / "a"])
    two = sb.for_run("", [runs, runs / "c2" / "b"])
    assert one is not None and two is not None
    assert one.key == two.key and one.rw == (str(runs),) and one.ro == (str(runs),)


def test_sandbox_settings_are_validated() -> None:
    from zambeze_mesh.settings.config import AgentConfig

    base = {"name": "a", "mesh": "m", "listen": "127.0.0.1:1"}
    with pytest.raises(InvalidInput, match="sandbox must be"):
        AgentConfig(**base, sandbox="chroot")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="sandbox_functions"):
        AgentConfig(**base, sandbox_functions="per-call")  # type: ignore[arg-type]
    assert AgentConfig(**base).sandbox == "auto"  # type: ignore[arg-type]
    assert AgentConfig(**base).sandbox_functions == "owner"  # type: ignore[arg-type]
    for mode in ("owner", "campaign", "shared"):
        assert AgentConfig(**base, sandbox_functions=mode).sandbox_functions == mode  # type: ignore[arg-type]


@needs_bwrap
def test_owner_function_jail_is_shared_by_one_owners_campaigns_only(tmp_path: Path) -> None:
    """sandbox_functions = "owner": two campaigns of one owner get the same jail key
    (one warm worker), whose binds hold that owner's dir and nothing of another owner's;
    a scope that climbs out of the runs tree is refused."""
    home, data = _home(tmp_path)
    runs = data / "runs"
    alice, bob = runs / "alice" / "m", runs / "bob" / "m"
    for d in (alice / "c1" / "functions", alice / "c2" / "functions", bob / "c3" / "f"):
        d.mkdir(parents=True)
    sb = Sandbox("auto", home=home, data_dir=data)
    one = sb.for_run("alice/m", [alice, alice / "c1" / "functions"], [bob / "c3" / "f"])
    two = sb.for_run("alice/m", [alice, alice / "c2" / "functions"])
    other = sb.for_run("bob/m", [bob, bob / "c3" / "f"])
    assert one is not None and two is not None and other is not None
    assert one.key == two.key != other.key
    assert one.rw == (str(alice),) and one.ro == (str(alice),)
    assert not any(str(bob) in p for p in one.prefix())
    with pytest.raises(InvalidInput, match="outside the runs dir"):
        sb.for_run("alice/../..", [alice])


def test_owner_dir_names_are_stable_safe_and_distinct() -> None:
    from zambeze_mesh.security.owners import owner_dir

    a = owner_dir("spiffe://m/client/alice")
    assert a == owner_dir("spiffe://m/client/alice") and a.startswith("client-alice-")
    assert a != owner_dir("spiffe://m/client/alice_")  # sanitised alike, hashed apart
    assert a != owner_dir("spiffe://other/client/alice")
    for weird in ("spiffe://m/../..", "spiffe://m/", "..", "a/b\n"):
        name = owner_dir(weird)
        assert "/" not in name and name.strip(".") and name.isprintable()
    with pytest.raises(InvalidInput):
        owner_dir("")


def test_code_under_tmp_is_bound_back_but_never_hidden_dirs_or_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout or venv under /tmp (hidden by the private /tmp) stays importable inside
    the sandbox: its packages and modules are bound back, its dot-dirs (agent homes of a
    demo) and the agent home are not."""
    from zambeze_mesh.execution import sandbox as sbx

    checkout = tmp_path / "checkout"
    (checkout / "pkg").mkdir(parents=True)
    (checkout / "pkg" / "__init__.py").write_text("")
    (checkout / "mod.py").write_text("")
    (checkout / ".zmesh-demo" / "edge").mkdir(parents=True)
    (checkout / "data").mkdir()  # not code
    home = checkout / "home"
    (home / "pkg2").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [str(checkout), str(home), *sys.path])
    sbx._software_candidates.cache_clear()
    try:
        binds = sbx.software_binds(home)
    finally:
        sbx._software_candidates.cache_clear()
    assert checkout / "pkg" in binds and checkout / "mod.py" in binds
    assert not any(p.name in (".zmesh-demo", "data") or home in (p, *p.parents) for p in binds)
