"""Zeroconf discovery (``_zmesh._tcp.local.``) on the loopback interface only.

Multicast works on ``lo`` here (the advertiser and the browser both pin
``interfaces=["127.0.0.1"]``), so nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import os

from tests.helpers.ports import free_port_pair
from tests.helpers.procs import ProcAgent, ProcMesh, zmesh
from zambeze_mesh.agent.bootstrap import open_store
from zambeze_mesh.membership.discovery import browse, interface_for
from zambeze_mesh.settings.config import AgentConfig
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store import identity as idstore


def _ca_digest(home: Home) -> str:
    store = open_store(home)
    try:
        return hashlib.sha256(idstore.load_identity(store).ca_cert_der).hexdigest()
    finally:
        store.close()


def test_interface_for() -> None:
    assert interface_for("127.0.0.1:7000") == "127.0.0.1"
    assert interface_for("0.0.0.0:7000", "10.0.0.5:7000") == "10.0.0.5"
    assert interface_for("0.0.0.0:7000", "host.example:7000") is None
    assert interface_for("[::1]:7000") == "::1"


def test_join_discovers_advertising_agent(procmesh: ProcMesh) -> None:
    mesh = f"disco{os.getpid()}"
    a = procmesh.init("a", "--mesh", mesh)  # a later --mesh wins over ProcMesh's "test"
    a.start()
    digest = _ca_digest(Home(a.home))
    ads = browse(3.0, "127.0.0.1", ca_digest=digest, first=True)
    assert [(ad.name, ad.mesh, ad.address) for ad in ads] == [("a", mesh, a.address)]
    assert ads[0].admission_address == f"127.0.0.1:{a.port + 1}"

    b = ProcAgent("b", procmesh.root / "b", free_port_pair())
    proc = zmesh(
        "join", "--discover", "--interface", "127.0.0.1",
        "--name", "b", "--listen", b.address, home=b.home, env={"ZMESH_TOKEN": procmesh.token(a)},
    )  # fmt: skip
    assert f"discovered seed {a.address}" in proc.stdout
    procmesh.agents["b"] = b
    out = (b.home / "config.toml").read_text()
    assert f'mesh = "{mesh}"' in out
    b.start()
    procmesh.wait_for(
        lambda: all(x.statuses() == {"a": "alive", "b": "alive"} for x in (a, b)),
        20,
        "a and b alive",
    )


def test_discovery_off_and_nothing_found(procmesh: ProcMesh) -> None:
    a = procmesh.init("a", "--mesh", f"quiet{os.getpid()}")
    cfg = AgentConfig.load(a.home / "config.toml")
    cfg.zeroconf = False
    cfg.save(a.home / "config.toml")
    a.start()
    token = procmesh.token(a)
    proc = zmesh(
        "join",
        "--discover",
        "--discover-timeout",
        "1.5",
        "--interface",
        "127.0.0.1",
        "--name",
        "b",
        "--listen",
        "127.0.0.1:0",
        home=procmesh.root / "b",
        check=False,
        env={"ZMESH_TOKEN": token},
    )
    assert proc.returncode != 0
    assert proc.stderr.startswith("zmesh: error: no zmesh agent of this mesh"), proc.stderr
    assert not (procmesh.root / "b").exists()
