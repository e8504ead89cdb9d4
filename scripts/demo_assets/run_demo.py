"""Driver of ``scripts/demo``: a four-agent mesh on this machine running the paper's campaign.

Creates agent homes ``edge`` (role=edge, facility=microscope), ``hpc`` (role=hpc,
facility=olcf), ``cluster`` (role=cluster, facility=cades) and ``repository``
(role=repository) under ``--root`` on free 127.0.0.1 ports, with the ``zmesh``
CLI (init, token, join, agent start); places each agent's scripts in its data dir;
runs ``campaign.py`` from the edge agent with the live status; draws the DAG;
exports the campaign's Provenance Run Crate (``zmesh provenance``, validated
offline with roc-validator); prints where the results are; stops the agents
unless ``--keep`` (which also starts ``zmesh ui`` on the edge agent and prints its URL).
``--stop`` stops what a ``--keep`` run left running: the agents and the web view.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent

#: name -> (labels, files placed in its data dir)
AGENTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "edge": (
        {"role": "edge", "facility": "microscope"},
        ["mscope_sim.sh", "mscope_sim.py", "calibration.json"],
    ),
    "hpc": ({"role": "hpc", "facility": "olcf"}, ["train.py", "unet.py"]),
    "cluster": (
        {"role": "cluster", "facility": "cades"},
        ["mod_select.py", "unet.py", "mscope_sim.py"],
    ),
    "repository": ({"role": "repository"}, []),
}


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(taken: set[int]) -> int:
    """A port P on 127.0.0.1 with P and P+1 free (and not handed out already)."""
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535 and not {port, port + 1} & taken and _free(port + 1):
            taken.update({port, port + 1})
            return port
    raise RuntimeError("no free pair of ports on 127.0.0.1")


class Demo:
    """The agents of one demo run (homes under ``root``)."""

    def __init__(self, root: Path, quiet: bool = False) -> None:
        self.root = root
        self.quiet = quiet
        self.env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        self.env["PATH"] = os.pathsep.join([bindir, self.env.get("PATH", os.defpath)])
        self.env["PYTHON"] = sys.executable  # the interpreter mscope_sim.sh uses
        self.env.pop("ZMESH_HOME", None)
        self.ports: dict[str, int] = {}

    def home(self, name: str) -> Path:
        """The home dir of agent ``name``."""
        return self.root / name

    def zmesh(
        self,
        name: str,
        *args: str,
        capture: bool = True,
        timeout: float = 120,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``zmesh --home <name's home> args...`` (``stdin`` fed to it); raise on failure."""
        cmd = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(self.home(name)), *args]
        proc = subprocess.run(
            cmd,
            env=self.env,
            text=True,
            timeout=timeout,
            capture_output=capture,
            check=False,
            input=stdin if stdin is not None else "",
        )
        if proc.returncode != 0:
            detail = f"\n{proc.stdout}\n{proc.stderr}" if capture else ""
            raise RuntimeError(f"zmesh {' '.join(args)} exited {proc.returncode}{detail}")
        return proc

    def say(self, text: str) -> None:
        """Progress line (unless quiet)."""
        if not self.quiet:
            print(f"==> {text}", flush=True)

    def start_ui(self, name: str, timeout: float = 30.0) -> str:
        """Start ``zmesh ui`` for agent ``name`` in the background; its URL (token included)."""
        home = self.home(name)
        out = home / "ui.out"
        cmd = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(home), "ui"]
        with out.open("w") as log:
            proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        (home / "ui.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            for line in out.read_text().splitlines():
                if "?token=" in line:
                    return line.strip()
            time.sleep(0.1)
        raise RuntimeError(f"zmesh ui did not start; see {out}")

    def stop_all(self) -> None:
        """Stop every agent that runs in a home under root (leftovers of an earlier run too)."""
        if not self.root.is_dir():
            return
        for pidfile in sorted(self.root.glob("*/ui.pid")):  # web views of --keep runs
            try:
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                pass
            else:
                _wait_gone(pid, 10.0)
            pidfile.unlink(missing_ok=True)
        for home in sorted(self.root.iterdir()):
            if (home / "config.toml").exists():
                cli = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(home)]
                subprocess.run(
                    [*cli, "agent", "stop"],
                    env=self.env,
                    capture_output=True,
                    timeout=60,
                    check=False,
                )

    def data_dir(self, name: str) -> Path:
        """The agent's ``@agentdir``."""
        from zambeze_mesh.settings.config import AgentConfig

        cfg = AgentConfig.load(self.home(name) / "config.toml")
        d = Path(cfg.data_dir)
        return d if d.is_absolute() else self.home(name) / d

    def _tune(self, name: str) -> None:
        """No multicast discovery: the demo mesh stays on 127.0.0.1."""
        from zambeze_mesh.settings.config import AgentConfig

        path = self.home(name) / "config.toml"
        cfg = AgentConfig.load(path)
        cfg.zeroconf = False
        cfg.save(path)

    def create(self) -> None:
        """Fresh homes: init the first agent, join the others, start all, place the scripts."""
        self.stop_all()
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        taken: set[int] = set()
        first = next(iter(AGENTS))
        for name, (labels, _) in AGENTS.items():
            port = free_port_pair(taken)
            self.ports[name] = port
            label_args = [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]
            listen = ["--name", name, "--listen", f"127.0.0.1:{port}", *label_args]
            if name == first:
                self.zmesh(name, "init", "--mesh", "microscopy", *listen)
            else:
                token = self.zmesh(first, "token", "create", "--ttl", "30m", "--uses", "1").stdout
                seed = f"127.0.0.1:{self.ports[first]}"
                self.zmesh(name, "join", seed, "--token-file", "-", *listen, stdin=token)
            self._tune(name)
            self.zmesh(name, "agent", "start")
            self.say(
                f"agent {name} ({', '.join(f'{k}={v}' for k, v in labels.items())}) on :{port}"
            )
            if name == first:
                time.sleep(0.2)
        for name, (_, files) in AGENTS.items():
            dest = self.data_dir(name)
            dest.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(ASSETS / f, dest / f)

    def members(self, name: str) -> list[dict[str, Any]]:
        """``zmesh members --json`` as seen by ``name``."""
        doc = json.loads(self.zmesh(name, "members", "--json").stdout)
        return list(doc if isinstance(doc, list) else doc.get("members", []))

    def wait_members(self, timeout: float = 60.0) -> None:
        """Until every agent sees all four alive."""
        deadline = time.monotonic() + timeout
        want = set(AGENTS)
        while True:
            seen = {
                name: {
                    m.get("name")
                    for m in self.members(name)
                    if str(m.get("status", "alive")).lower() == "alive"
                }
                for name in AGENTS
            }
            if all(want <= s for s in seen.values()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"membership did not converge: {seen}")
            time.sleep(0.5)

    def run_campaign(self, quick: bool, timeout: float) -> tuple[int, str]:
        """``zmesh run campaign.py`` from the edge (live status on the terminal)."""
        args = ["run", str(ASSETS / "campaign.py")]
        if quick:
            args.append("--quick")
        cmd = [sys.executable, "-m", "zambeze_mesh.cli.main", "--home", str(self.home("edge"))]
        proc = subprocess.run([*cmd, *args], env=self.env, timeout=timeout, check=False)
        listed = json.loads(self.zmesh("edge", "campaigns", "--json").stdout)
        listed.sort(key=lambda c: c.get("created_unix_ms", 0))
        cid = listed[-1]["campaign_id"] if listed else ""
        return proc.returncode, cid


def shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it (as a user types it)."""
    try:
        rel = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(rel) if str(rel) != "." else "."


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until process ``pid`` has exited."""
    from zambeze_mesh.cli.daemon import process_alive

    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def write_env(root: Path) -> Path:
    """``<root>/env``: puts ``zmesh`` on PATH and makes the edge agent the default home."""
    env = root / "env"
    bindir = Path(sys.executable).parent
    env.write_text(
        "# source this file: `zmesh` on PATH, the demo's edge agent as the default home\n"
        f'export PATH="{bindir}:$PATH"\n'
        f'export ZMESH_HOME="{root / "edge"}"\n'
    )
    return env


def next_steps(root: Path, cid: str) -> list[str]:
    """Copy-pasteable commands for the mesh left running by ``--keep``."""
    home = shown(root)
    return [
        f"source {shown(root / 'env')}",
        "zmesh members",
        "zmesh campaigns",
        f"zmesh status {cid or 'ID'}",
        "zmesh data ls repository://user/repository",
        f"zmesh --home {home}/hpc members",
        "./scripts/demo --stop",
    ]


def transfers(home: Path, cid: str) -> list[str]:
    """One line per completed input staging of ``cid`` (bytes, method, streams, rate),
    from the campaign's event stream on ``home``'s Unix socket."""
    import asyncio

    import grpc

    from zambeze_mesh.settings.home import Home
    from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

    async def watch() -> list[str]:
        lines = []
        async with grpc.aio.insecure_channel(f"unix:{Home(home).socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            async for ev in stub.Watch(campaigns_pb2.WatchRequest(campaign_id=cid), timeout=30):
                d = ev.detail
                if ev.state == common_pb2.ACTIVITY_STATE_STAGING and "method" in d:
                    lines.append(
                        f"{ev.activity} on {ev.agent}: {d.get('uri', '?')}, {d['bytes']} bytes "
                        f"via {d['method']} ({d.get('streams', '1')} streams) "
                        f"at {d.get('rate_mib_s', '?')} MiB/s"
                    )
        return lines

    try:
        return asyncio.run(watch())
    except grpc.RpcError as exc:
        return [f"(events unavailable: {exc})"]


def summarize(repo: Path) -> dict[str, Any]:
    """The validation report found under the repository dir (``{}`` if none)."""
    found = sorted(repo.rglob("validation.json")) if repo.is_dir() else []
    if not found:
        return {}
    doc: dict[str, Any] = json.loads(found[0].read_text())
    doc["_dir"] = str(found[0].parent)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """Build the mesh, run the campaign, report; exit 1 if the campaign failed."""
    p = argparse.ArgumentParser(description="the zambeze-mesh electron-microscopy demo")
    p.add_argument("--quick", action="store_true", help="smaller data and grid")
    p.add_argument("--keep", action="store_true", help="leave the agents running")
    p.add_argument(
        "--stop",
        action="store_true",
        help="stop the agents and the web view that a --keep run left running, and exit",
    )
    p.add_argument("--root", default=".zmesh-demo", help="where the agent homes go")
    p.add_argument("--graph", default="demo-dag.png", help="picture of the DAG")
    p.add_argument("--timeout", type=float, default=900.0, help="campaign time limit (s)")
    p.add_argument(
        "--crate", default="demo-crate.zip", help="the campaign's Provenance Run Crate (dir or zip)"
    )
    args = p.parse_args(argv)
    started = time.monotonic()
    demo = Demo(Path(args.root).absolute())
    if args.stop:
        demo.stop_all()
        demo.say(f"stopped the demo's agents and web view (homes in {shown(demo.root)})")
        return 0
    code = 1
    cid = ""
    try:
        demo.create()
        demo.wait_members()
        demo.say(f"mesh of {len(AGENTS)} agents ready in {time.monotonic() - started:.1f} s")
        if args.keep:
            demo.say(f"live web view of the mesh and the campaign: {demo.start_ui('edge')}")
        demo.say("running scripts/demo_assets/campaign.py from the edge agent")
        t0 = time.monotonic()
        rc, cid = demo.run_campaign(args.quick, args.timeout)
        campaign_s = time.monotonic() - t0
        if cid:
            try:
                demo.zmesh("edge", "status", cid, "--graph", str(Path(args.graph).absolute()))
                demo.say(f"DAG picture: {args.graph}")
            except RuntimeError as exc:
                demo.say(f"could not draw the DAG: {exc}")
        if cid:
            moved = transfers(demo.home("edge"), cid)
            demo.say(f"data staged between agents ({len(moved)} transfers):")
            for line in moved:
                demo.say(f"  transfer {line}")
        crate_ok = False
        if cid:
            crate = Path(args.crate).absolute()
            if crate.is_dir():
                shutil.rmtree(crate)
            crate.unlink(missing_ok=True)
            try:
                out = demo.zmesh(
                    "edge", "provenance", cid, "--out", str(crate), "--validate", timeout=600
                )
                demo.say(out.stdout.strip().replace("\n", "\n==> "))
                crate_ok = True
            except RuntimeError as exc:
                demo.say(f"the provenance crate is missing or not valid: {exc}")
        repo = demo.data_dir("repository") / "user" / "repository"
        report = summarize(repo)
        wall = time.monotonic() - started
        if rc == 0 and report and crate_ok:
            best = report["best"]
            demo.say(f"campaign {cid} succeeded in {campaign_s:.1f} s (demo total {wall:.1f} s)")
            demo.say(
                f"best model by validation {report.get('metric', 'iou')} {best['id']}: "
                f"IoU {best['val_iou']:.3f} (all-background baseline "
                f"{report['baseline_iou']:.3f}), loss {best['val_loss']:.3f}"
            )
            demo.say(f"results in {report['_dir']}:")
            for sub in ("models", "plots", "validation.json", "mlruns"):
                demo.say(f"  {Path(report['_dir']) / sub}")
            demo.say(
                "browse the runs: mlflow ui --backend-store-uri "
                f"{(Path(report['_dir']) / 'mlruns').as_uri()}"
            )
            demo.say(
                f"provenance: {args.crate} (open ro-crate-metadata.json, or "
                "python -c 'from rocrate.rocrate import ROCrate; ...'; see the README)"
            )
            code = 0
        else:
            demo.say(f"campaign {cid or '?'} did not succeed (exit {rc}); see `zmesh status`")
            for name in AGENTS:
                demo.say(f"  agent log: {demo.home(name) / 'agent.out'}")
    finally:
        if args.keep:
            write_env(demo.root)
            demo.say(f"agents left running (homes in {shown(demo.root)}); next steps:")
            for line in next_steps(demo.root, cid):
                print(f"    {line}", flush=True)
            if (demo.home("edge") / "ui.pid").exists():
                pid = (demo.home("edge") / "ui.pid").read_text()
                demo.say(
                    f"web view left running (pid {pid}); `./scripts/demo --stop` stops it "
                    "with the agents"
                )
        else:
            demo.stop_all()
    return code


if __name__ == "__main__":
    sys.exit(main())
