"""``./scripts/test`` stops the services it started, and only those.

``scripts/slurm/start-single-node`` lists what it started in ``$ZMESH_SLURM_STARTED_FILE``
and ``scripts/test`` hands that file to ``stop-single-node --started FILE`` when it ends.
These tests run the stop script on stand-in daemons (processes this test spawns under
the names slurmctld, slurmd and munged, with pid files in a Slurm directory of their
own), so the Slurm the suite itself may be using is never touched; and they check that
starting on a Slurm that already answers lists nothing to stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "scripts" / "slurm" / "start-single-node"
STOP = ROOT / "scripts" / "slurm" / "stop-single-node"


class Daemons:
    """Stand-in daemons: ``sleep`` copied under a daemon's name, each reaped by a thread
    as soon as it ends (so a stopped one is gone, not a zombie the script waits on)."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, key: str, name: str) -> int:
        exe = self.bin / name
        if not exe.exists():
            sleep = shutil.which("sleep")
            assert sleep is not None
            shutil.copy(sleep, exe)
        proc = subprocess.Popen([str(exe), "600"])
        threading.Thread(target=proc.wait, daemon=True).start()
        self.procs[key] = proc
        return proc.pid

    def alive(self, key: str) -> bool:
        return self.procs[key].poll() is None and _running(self.procs[key].pid)

    def comm(self, key: str) -> str:
        return Path(f"/proc/{self.procs[key].pid}/comm").read_text().strip()

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        d.kill_all()


def _slurm_dir(root: Path, daemons: Daemons, prefix: str) -> Path:
    """A Slurm directory whose pid files name two stand-ins (``PREFIX-slurmctld``...)."""
    sdir = root / f"{prefix}-slurm"
    sdir.mkdir()
    for name in ("slurmctld", "slurmd"):
        pid = daemons.spawn(f"{prefix}-{name}", name)
        (sdir / f"{name}.pid").write_text(f"{pid}\n")
    return sdir


def _stop(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ZMESH_SLURM_DIR"}
    return subprocess.run(
        [str(STOP), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_stops_exactly_what_the_started_file_lists(tmp_path: Path, daemons: Daemons) -> None:
    ours = _slurm_dir(tmp_path, daemons, "ours")
    other = _slurm_dir(tmp_path, daemons, "other")  # another Slurm on the machine
    munged = daemons.spawn("munged", "munged")
    daemons.spawn("other-munged", "munged")  # a munged that was up before
    assert daemons.comm("ours-slurmd") == "slurmd" and daemons.comm("munged") == "munged"
    started = tmp_path / "started"
    started.write_text(f"munged {munged}\nslurmctld\nslurmd\n")  # as start-single-node writes

    proc = _stop("--started", str(started), str(ours))

    assert proc.returncode == 0, proc.stderr
    assert "did not stop" not in proc.stderr
    for key in ("ours-slurmctld", "ours-slurmd", "munged"):
        assert not daemons.alive(key), key
    for key in ("other-slurmctld", "other-slurmd", "other-munged"):
        assert daemons.alive(key), key
    assert started.read_text() == ""  # a second stop stops nothing
    assert other.is_dir()


def test_services_that_were_already_up_stay_up(tmp_path: Path, daemons: Daemons) -> None:
    """Slurm was already running and only munged had to be started: Slurm stays."""
    ours = _slurm_dir(tmp_path, daemons, "ours")
    munged = daemons.spawn("munged", "munged")
    started = tmp_path / "started"
    started.write_text(f"munged {munged}\n")
    assert _stop("--started", str(started), str(ours)).returncode == 0
    assert not daemons.alive("munged")
    assert daemons.alive("ours-slurmctld") and daemons.alive("ours-slurmd")

    started.write_text("")  # nothing started: nothing stopped
    assert _stop("--started", str(started), str(ours)).returncode == 0
    assert _stop("--started", str(tmp_path / "missing"), str(ours)).returncode == 0
    assert daemons.alive("ours-slurmctld") and daemons.alive("ours-slurmd")


def test_without_a_started_file_munged_stays(tmp_path: Path, daemons: Daemons) -> None:
    ours = _slurm_dir(tmp_path, daemons, "ours")
    daemons.spawn("munged", "munged")
    assert _stop(str(ours)).returncode == 0
    assert not daemons.alive("ours-slurmctld") and not daemons.alive("ours-slurmd")
    assert daemons.alive("munged")  # others may need it


def _answering_slurm() -> Path | None:
    conf = os.environ.get("SLURM_CONF", "")
    if not conf or not Path(conf).is_file() or shutil.which("sinfo") is None:
        return None
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10, check=False
    )
    states = out.stdout.split()
    return Path(conf) if any(s in ("idle", "mix", "alloc") for s in states) else None


def test_start_on_an_answering_slurm_lists_nothing_to_stop(tmp_path: Path) -> None:
    conf = _answering_slurm()
    if conf is None:
        pytest.skip("no single-node Slurm answers here (SLURM_CONF; scripts/test starts one)")
    started = tmp_path / "started"
    started.write_text("stale\n")
    proc = subprocess.run(
        [str(START), str(conf.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ZMESH_SLURM_STARTED_FILE": str(started)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(conf)
    assert started.read_text() == ""  # already up: this call started nothing


def _run_test_script_exit(
    tmp_path: Path, daemons: Daemons, keep: bool
) -> subprocess.CompletedProcess[str]:
    """``scripts/test``'s own services block, ended as the script ends (its EXIT trap),
    after start-single-node listed the stand-ins of ``ours`` as started."""
    script = (ROOT / "scripts" / "test").read_text()
    begin, end = script.index("started=$(mktemp)"), script.index("trap stop_services EXIT")
    block = script[begin : end + len("trap stop_services EXIT")]
    munged = daemons.spawn("munged", "munged")
    env = {**os.environ, "ZMESH_SLURM_DIR": str(tmp_path / "ours-slurm")}
    env.pop("ZMESH_KEEP_SERVICES", None)
    if keep:
        env["ZMESH_KEEP_SERVICES"] = "1"
    body = f'{block}\nprintf "munged {munged}\\nslurmctld\\nslurmd\\n" >"$started"\nexit 0\n'
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_scripts_test_stops_at_exit_what_it_started(tmp_path: Path, daemons: Daemons) -> None:
    _slurm_dir(tmp_path, daemons, "ours")
    proc = _run_test_script_exit(tmp_path, daemons, keep=False)
    assert proc.returncode == 0, proc.stderr
    assert "stopping what this run started: munged slurmctld slurmd" in proc.stdout
    for key in ("ours-slurmctld", "ours-slurmd", "munged"):
        assert not daemons.alive(key), key


def test_scripts_test_keeps_services_when_asked(tmp_path: Path, daemons: Daemons) -> None:
    _slurm_dir(tmp_path, daemons, "ours")
    proc = _run_test_script_exit(tmp_path, daemons, keep=True)
    assert proc.returncode == 0, proc.stderr
    assert "leaving Slurm and munged running (ZMESH_KEEP_SERVICES=1)" in proc.stdout
    for key in ("ours-slurmctld", "ours-slurmd", "munged"):
        assert daemons.alive(key), key
