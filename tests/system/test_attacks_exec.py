"""Attacks from inside an activity: a client's code runs on an agent and goes for its keys.

Real agent processes (``ProcMesh``) with the default sandbox; the client talks to
them with a client certificate over mTLS, as a remote user would. Every test checks
that the activity did not get the key and that the agent keeps working.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import cloudpickle
import grpc
import pytest

from tests.helpers.procs import ProcAgent, ProcMesh, zmesh
from tests.system.test_attacks import S, shell
from zambeze_mesh.agent.bootstrap import ClientBundle, issue_client, open_store
from zambeze_mesh.execution.sandbox import bwrap_problem
from zambeze_mesh.settings.home import Home
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc

pytestmark = pytest.mark.skipif(bool(bwrap_problem()), reason=bwrap_problem() or "bwrap works")

KEY_MARK = "PRIVATE KEY"


def _client(a: ProcAgent, out: Path, name: str = "mallory") -> ClientBundle:
    store = open_store(Home(a.home))
    try:
        return issue_client(store, name, out)
    finally:
        store.close()


def _channel(a: ProcAgent, bundle: ClientBundle) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        bundle.ca.read_bytes(), bundle.key.read_bytes(), bundle.cert.read_bytes()
    )
    return grpc.secure_channel(a.address, creds)


def _run(
    stub: campaigns_pb2_grpc.CampaignsStub, acts: list[S.ActivitySpec]
) -> campaigns_pb2.CampaignStatus:
    resp = stub.Submit(campaigns_pb2.SubmitRequest(name="evil", activities=acts), timeout=10)
    for _ in stub.Watch(
        campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True), timeout=90
    ):
        pass
    return stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id), timeout=10)


def _secrets(agents: list[ProcAgent]) -> list[str]:
    """Every path an activity could try for a key: key files, stores, sockets, and the
    same through the agent's /proc root."""
    paths = []
    for a in agents:
        for rel in ("keys/ca.key", "keys/agent.key", "zmesh.db", "zmesh.db-wal", "agent.sock"):
            paths.append(str(a.home / rel))
            if a.pid:
                paths.append(f"/proc/{a.pid}/root{a.home / rel}")
    return paths


def _key_bodies(agents: list[ProcAgent]) -> list[str]:
    """A line from the middle of each private key, to look for in what came back."""
    out = []
    for a in agents:
        for name in ("ca.key", "agent.key"):
            path = a.home / "keys" / name
            if path.exists():
                out.append(path.read_text().splitlines()[1])
    return out


def _two(procmesh_root: Path) -> tuple[ProcMesh, ProcAgent, ProcAgent]:
    pm = ProcMesh(procmesh_root, sandbox="")  # the default of `zmesh init` / `join`
    a = pm.init("a")
    a.start()
    b = pm.join("b", a)
    b.start()
    pm.wait_for(lambda: set(a.statuses().values()) == {"alive"} and len(a.statuses()) == 2)
    return pm, a, b


def _still_works(stub: campaigns_pb2_grpc.CampaignsStub) -> None:
    status = _run(stub, [shell("ok", "echo fine > $ZMESH_OUTPUT_DIR/ok.txt", agent="a")])
    assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status


def test_shell_activity_cannot_read_agent_secrets(tmp_path: Path) -> None:
    """Inject: a client submits ShellActivity(agent=<CA holder>) that cats the store by
    its old path ($(dirname $ZMESH_AGENT_DIR)/zmesh.db), the key files, the other
    agent's home, the agent's /proc/<pid>/root view and another campaign's dir.
    Check: no key comes back, every path is missing; an activity still writes its
    output, reads an upstream output as input, and the agent serves the next campaign."""
    pm, a, b = _two(tmp_path)
    try:
        bundle = _client(a, tmp_path / "client")
        with _channel(b, bundle) as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            other = _run(
                stub, [shell("victim", "echo private > $ZMESH_OUTPUT_DIR/v.txt", agent="a")]
            )
            (victim_dir,) = (a.home / "data" / "runs").glob(f"*/*/{other.campaign_id}/victim")
            assert (victim_dir / "output" / "v.txt").exists()
            probes = [*_secrets([a, b]), str(victim_dir / "output" / "v.txt")]
            cmd = "; ".join(
                [
                    'db="$(dirname "$ZMESH_AGENT_DIR")/zmesh.db"',
                    'grep -a -o "BEGIN [A-Z ]*PRIVATE KEY" "$db" && echo "LEAK:$db"',
                    *(
                        f"if cat '{p}' >/dev/null 2>&1 || test -S '{p}'; then "
                        f"echo 'LEAK:{p}'; cat '{p}' | grep -a -A1 BEGIN; fi"
                        for p in probes
                    ),
                    'cat "$(dirname "$ZMESH_AGENT_DIR")"/keys/* 2>/dev/null',
                    "echo written > $ZMESH_OUTPUT_DIR/mine.txt",
                    "echo DONE",
                ]
            )
            acts = [
                shell("steal", cmd, agent="a"),
                shell(
                    "reader",
                    "cp $ZMESH_INPUT_0/mine.txt $ZMESH_OUTPUT_DIR/; cat $ZMESH_OUTPUT_DIR/mine.txt",
                    agent="a",
                    data_uris=["@output:steal"],
                ),
            ]
            status = _run(stub, acts)
            by = {x.name: x for x in status.activities}
            out = by["steal"].detail["stdout_tail"]
            assert "DONE" in out, by["steal"]
            assert "LEAK" not in out, out
            assert KEY_MARK not in out, out
            for body in _key_bodies([a, b]):
                assert body not in out
            # The activity itself worked: its output, read downstream as an input.
            assert by["reader"].state == S.ACTIVITY_STATE_SUCCEEDED, by["reader"]
            assert by["reader"].detail["stdout_tail"].strip() == "written"
            _still_works(stub)
        assert a.pid is not None
        os.kill(a.pid, 0)
    finally:
        pm.stop_all()


def test_shipped_function_cannot_read_agent_secrets(tmp_path: Path) -> None:
    """Inject: a shipped Python function pinned to the CA holder opens the key files,
    the store (old and new paths) and the agent's /proc root, and lists the agent
    home. Check: it gets none of them (the warm worker runs in the sandbox); a
    second function of the same campaign still writes and reads its working dir."""
    pm, a, b = _two(tmp_path)
    try:
        bundle = _client(a, tmp_path / "client")
        probes = _secrets([a, b])
        home = str(a.home)

        def steal(paths: list[str], home_dir: str) -> dict[str, Any]:
            import glob as g
            import os as o

            got: dict[str, Any] = {}
            db = o.path.join(o.path.dirname(o.environ["ZMESH_AGENT_DIR"]), "zmesh.db")
            for p in [*paths, db]:
                try:
                    with open(p, "rb") as fh:
                        got[p] = fh.read().decode("latin-1")
                except OSError as exc:
                    got[p] = None if exc.errno == 2 else f"error {exc.errno}"
            got["listing"] = sorted(g.glob(home_dir + "/**", recursive=True))
            return got

        def work() -> str:
            import os as o

            with open("f.txt", "w") as fh:
                fh.write("from a function")
            with open(o.path.join(o.getcwd(), "f.txt")) as fh:
                return fh.read()

        acts = [
            S.ActivitySpec(
                name="steal",
                agent="a",
                python=S.PythonSpec(function=cloudpickle.dumps((steal, (probes, home), {}))),
            ),
            S.ActivitySpec(
                name="work",
                agent="a",
                depends_on=["steal"],
                python=S.PythonSpec(function=cloudpickle.dumps((work, (), {}))),
            ),
        ]
        with _channel(b, bundle) as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            status = _run(stub, acts)
            by = {x.name: x for x in status.activities}
            assert by["steal"].state == S.ACTIVITY_STATE_SUCCEEDED, by["steal"]
            got = cloudpickle.loads(by["steal"].result)
            leaked = {p: v for p, v in got.items() if p != "listing" and v is not None}
            assert not leaked, {p: str(v)[:80] for p, v in leaked.items()}
            for path in got["listing"]:
                assert "/keys" not in path and not path.endswith(("zmesh.db", "agent.sock"))
            assert by["work"].state == S.ACTIVITY_STATE_SUCCEEDED, by["work"]
            assert cloudpickle.loads(by["work"].result) == "from a function"
            _still_works(stub)
    finally:
        pm.stop_all()


def _fn(name: str, func: Any, *args: Any) -> S.ActivitySpec:
    return S.ActivitySpec(
        name=name, agent="a", python=S.PythonSpec(function=cloudpickle.dumps((func, args, {})))
    )


def test_one_owner_shares_warm_workers_and_never_sees_another_owners_dirs(
    tmp_path: Path,
) -> None:
    """Inject: clients alice and bob (two client certificates) run campaigns on the same
    agent; alice's shell activity and shipped function try to read bob's output file
    and list his campaign dir, by path. Check: both get nothing (bob's dirs are not in
    the jail of alice's warm worker nor of her shell run), while alice's own earlier
    campaign's output is readable by her function, and her second campaign's function
    runs in a worker started before that campaign was submitted (no new worker), not
    in bob's."""
    pm, a, _ = _two(tmp_path)
    try:
        alice, bob = (_client(a, tmp_path / n, n) for n in ("alice", "bob"))

        def write(text: str) -> tuple[str, int]:
            import os as o

            path = o.path.join(o.environ["ZMESH_OUTPUT_DIR"], "secret.txt")
            with open(path, "w") as fh:
                fh.write(text)
            return path, o.getpid()

        def peek(paths: list[str]) -> tuple[dict[str, str | None], float]:
            import os as o

            got: dict[str, str | None] = {}
            for p in paths:
                try:
                    with open(p) as fh:
                        got[p] = fh.read()
                except OSError as exc:
                    got[p] = None if exc.errno == 2 else f"error {exc.errno}"
            # When this worker process started (seconds since boot).
            with open("/proc/self/stat") as fh:
                ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
            return got, ticks / o.sysconf("SC_CLK_TCK")

        with _channel(a, bob) as ch:
            bob_stub = campaigns_pb2_grpc.CampaignsStub(ch)
            bobs = _run(bob_stub, [_fn("w", write, "BOB-FN")])
            assert bobs.state == S.CAMPAIGN_STATE_SUCCEEDED, bobs
            bob_file, _ = cloudpickle.loads(bobs.activities[0].result)
            bob_pid = bobs.activities[0].detail["worker_pid"]
            bob_cmd = "echo BOB-SH > $ZMESH_OUTPUT_DIR/s.txt"
            bob_sh = _run(bob_stub, [shell("s", bob_cmd, agent="a")])
            assert bob_sh.state == S.CAMPAIGN_STATE_SUCCEEDED, bob_sh
            bob_sh_file = bob_sh.activities[0].detail["output_dir"] + "/s.txt"
        assert Path(bob_file).read_text() == "BOB-FN"
        assert Path(bob_sh_file).read_text() == "BOB-SH\n"
        bob_dirs = [str(Path(bob_file).parents[2]), str(Path(bob_sh_file).parents[2])]
        probes = [bob_file, bob_sh_file]
        with _channel(a, alice) as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            first = _run(stub, [_fn("w", write, "ALICE-1")])
            assert first.state == S.CAMPAIGN_STATE_SUCCEEDED, first
            own_file, _ = cloudpickle.loads(first.activities[0].result)
            cmd = "; ".join(
                [
                    *(f"cat '{p}' 2>/dev/null && echo 'LEAK:{p}'" for p in probes),
                    *(f"ls '{d}' 2>/dev/null && echo 'LEAK:{d}'" for d in bob_dirs),
                    "echo DONE",
                ]
            )
            peeker = _fn("peek", peek, [*probes, own_file])
            submitted = float(Path("/proc/uptime").read_text().split()[0])
            second = _run(stub, [peeker, shell("sh", cmd, agent="a")])
            by = {x.name: x for x in second.activities}
            assert second.state == S.CAMPAIGN_STATE_SUCCEEDED, second
            got, worker_started = cloudpickle.loads(by["peek"].result)
            assert got == {bob_file: None, bob_sh_file: None, own_file: "ALICE-1"}, got
            out = by["sh"].detail["stdout_tail"]
            assert "DONE" in out and "LEAK" not in out and "BOB" not in out, out
            # Alice's second campaign ran in a worker already warm (started during
            # her first campaign: that worker or its spare), not in bob's.
            assert worker_started < submitted
            assert by["peek"].detail["worker_pid"] != bob_pid
    finally:
        pm.stop_all()


def test_key_files_are_private_and_status_names_the_sandbox(tmp_path: Path) -> None:
    """The agent and CA keys are files of mode 0600 in a 0700 dir, the store has no
    key, and `zmesh agent status` says how activities are confined."""
    pm = ProcMesh(tmp_path, sandbox="")
    a = pm.init("a")
    keys = a.home / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in ("agent.key", "ca.key"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in (a.home / "zmesh.db").read_bytes()
    out = zmesh("agent", "status", home=a.home, check=False).stdout
    assert "sandbox: bwrap" in out, out


def test_encrypted_ca_key_signs_joins_only_when_unlocked(tmp_path: Path) -> None:
    """`zmesh init --ca-passphrase-file`: the CA key is encrypted at rest. Started
    without the passphrase the CA holder runs but signs no join (UNAVAILABLE, says
    why) and warns; a wrong passphrase stops the start; with
    `agent start --ca-passphrase-file` (or $ZMESH_CA_PASSPHRASE_FILE) joins work."""
    pp = tmp_path / "passphrase"
    pp.write_text("correct horse battery staple\n")
    pm = ProcMesh(tmp_path / "m")
    try:
        a = pm.init("a", "--ca-passphrase-file", str(pp))
        pem = (a.home / "keys" / "ca.key").read_bytes()
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        a.start()
        token = pm.token(a)
        with pytest.raises(AssertionError, match="CA key is locked"):
            pm.join("b", a, token=token)
        assert "CA key is locked" in (a.home / "agent.out").read_text()
        a.stop()
        bad = tmp_path / "bad"
        bad.write_text("wrong\n")
        res = zmesh("agent", "start", "--ca-passphrase-file", str(bad), home=a.home, check=False)
        assert res.returncode != 0 and "wrong CA passphrase" in res.stderr, res.stderr
        res = zmesh("agent", "start", home=a.home, env={"ZMESH_CA_PASSPHRASE_FILE": str(pp)})
        a.pid = int((a.home / "agent.pid").read_text())
        b = pm.join("b", a, token=token)
        b.start()
        pm.wait_for(lambda: a.statuses().get("b") == "alive", what="b alive")
    finally:
        pm.stop_all()


def test_log_swapped_for_a_link_to_a_key_returns_nothing(tmp_path: Path) -> None:
    """Inject: an activity replaces its stdout.log / stderr.log by symlinks to the
    agent's CA key and store (paths it cannot open itself, but the agent can), hoping
    the agent reads them back as the output tails; a second activity in the same
    working dir finds stdout.log linked to the agent key (the agent would truncate it).
    Check: no key in the tails, the key files are intact, the agent keeps working."""
    pm, a, b = _two(tmp_path)
    try:
        bundle = _client(a, tmp_path / "client")
        before = {n: (a.home / "keys" / n).read_bytes() for n in ("ca.key", "agent.key")}
        home = str(a.home)
        swap = (
            "echo hello; rm -f stdout.log stderr.log; "
            f"ln -s {home}/keys/ca.key stdout.log; ln -s {home}/zmesh.db stderr.log"
        )
        plant = f"ln -sf {home}/keys/agent.key stdout.log; mkdir -p $ZMESH_OUTPUT_DIR"
        acts = [
            shell("swap", swap, agent="a"),
            shell("plant", plant, agent="a", working_dir="@agentdir/shared"),
            shell(
                "victim",
                "echo second",
                agent="a",
                working_dir="@agentdir/shared",
                depends_on=["plant"],
            ),
        ]
        with _channel(b, bundle) as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            status = _run(stub, acts)
            by = {x.name: x for x in status.activities}
            tails = "".join(
                x.detail.get("stdout_tail", "") + x.detail.get("stderr_tail", "")
                for x in status.activities
            )
            assert KEY_MARK not in tails and "SQLite" not in tails, tails[:300]
            for body in _key_bodies([a]):
                assert body not in tails
            assert by["swap"].state == S.ACTIVITY_STATE_SUCCEEDED, by["swap"]
            after = {n: (a.home / "keys" / n).read_bytes() for n in ("ca.key", "agent.key")}
            assert after == before
            _still_works(stub)
    finally:
        pm.stop_all()


@pytest.mark.skipif(os.geteuid() != 0, reason="run_as needs an agent running as root")
async def test_run_as_user_cannot_read_agent_secrets() -> None:
    """Inject: with `sandbox = "none"` and `run_as = "nobody"`, a shell activity reads
    the key files and the store and lists the home. Check: it runs as nobody, gets
    permission denied on each, still writes its output, and the key files are intact."""
    import pwd
    import shutil
    import tempfile

    from tests.helpers.inproc import mesh

    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    # pytest's tmp dirs are 0700: the run_as user could not reach its working dir.
    root = Path(tempfile.mkdtemp(prefix="zmesh-runas-", dir="/tmp"))
    os.chmod(root, 0o711)
    try:
        cfg = {"sandbox": "none", "run_as": "nobody"}
        async with mesh(root, 1, configure=lambda i: cfg) as agents:
            agent = agents[0]
            home = agent.home.root
            cmd = "; ".join(
                [
                    "id -u > $ZMESH_OUTPUT_DIR/uid",
                    f"cat {home}/keys/ca.key {home}/keys/agent.key {home}/zmesh.db",
                    f"ls {home}",
                    "echo DONE",
                ]
            )
            async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
                stub = campaigns_pb2_grpc.CampaignsStub(ch)
                resp = await stub.Submit(
                    campaigns_pb2.SubmitRequest(name="r", activities=[shell("steal", cmd)])
                )
                async for _ in stub.Watch(
                    campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
                ):
                    pass
                status = await stub.Get(
                    campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id)
                )
            act = status.activities[0]
            out, err = act.detail["stdout_tail"], act.detail.get("stderr_tail", "")
            assert "DONE" in out and KEY_MARK not in out + err, (out, err)
            assert err.count("Permission denied") >= 4, err
            uid = Path(act.detail["output_dir"]) / "uid"
            assert uid.read_text().strip() == str(nobody)
            assert (home / "keys" / "ca.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_local_batch_job_runs_in_the_sandbox(tmp_path: Path) -> None:
    """Inject: with `scheduler = "local"` (PSI/J jobs on this machine) a shell activity
    reads the key files and the store. Check: none is visible to the job, which still
    writes its output."""
    from tests.helpers.inproc import mesh

    cfg = {"sandbox": "auto", "scheduler": "local"}
    async with mesh(tmp_path, 1, configure=lambda i: cfg) as agents:
        agent = agents[0]
        home = agent.home.root
        cmd = (
            f"for f in {home}/keys/ca.key {home}/keys/agent.key {home}/zmesh.db; do "
            'test -e "$f" && echo "LEAK:$f"; done; echo ok > $ZMESH_OUTPUT_DIR/o.txt; echo DONE'
        )
        async with grpc.aio.insecure_channel(f"unix:{agent.home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            resp = await stub.Submit(
                campaigns_pb2.SubmitRequest(name="b", activities=[shell("steal", cmd)])
            )
            async for _ in stub.Watch(
                campaigns_pb2.WatchRequest(campaign_id=resp.campaign_id, follow=True)
            ):
                pass
            status = await stub.Get(campaigns_pb2.GetCampaignRequest(campaign_id=resp.campaign_id))
        act = status.activities[0]
        assert act.state == S.ACTIVITY_STATE_SUCCEEDED, act
        assert "job_id" in act.detail, act.detail  # it really went through the batch plugin
        out = act.detail.get("stdout_tail", "")
        assert "DONE" in out and "LEAK" not in out, out
        assert (Path(act.detail["output_dir"]) / "o.txt").read_text().strip() == "ok"
