"""DataService policy without the network: grant secret, offers, methods, chunk caps."""

from __future__ import annotations

from pathlib import Path

import pytest

from zambeze_mesh.agent.datasvc import DataService, grant_secret
from zambeze_mesh.data.catalog import digest_of_manifest
from zambeze_mesh.errors import NotPermitted
from zambeze_mesh.store import Store, kv

ME = "spiffe://t/agent/me"


def test_grant_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    first = grant_secret(store)
    assert len(first) == 32 and grant_secret(store) == first
    store.close()
    store = Store(tmp_path / "db")
    assert grant_secret(store) == first  # survives a restart
    kv.put(store, "x", "1")
    assert kv.get(store, "x") == "1" and kv.get(store, "y") is None
    store.close()


def test_offer_directory_methods_and_caps(tmp_path: Path) -> None:
    now = [1_000_000]
    svc = DataService(
        tmp_path / "data",
        [],
        b"s" * 32,
        methods=["rsync", "grpc-stream"],
        max_message_bytes=1 << 20,
        address="127.0.0.1:7000",
        now_ms=lambda: now[0],
    )
    d = tmp_path / "data" / "d"
    (d / "s").mkdir(parents=True)
    (d / "a").write_bytes(b"abc")
    (d / "s" / "b").write_bytes(b"de")
    res = svc.offer(ME, "d", ["rsync"])
    assert res.info.is_dir and res.info.size == 5
    assert res.info.sha256 == digest_of_manifest(res.manifest)
    assert [e.relpath for e in res.manifest] == ["a", "s/b"]
    assert res.chosen == "rsync" and res.methods == ["grpc-stream", "rsync"]
    assert res.method_params == {"path": str(d.resolve()), "host": "127.0.0.1"}
    assert res.expires_ms == now[0] + 600_000
    t = svc.fetch_target(ME, res.token, "s/b")
    assert t.size == 2 and t.path == (d / "s" / "b").resolve()
    assert svc.offer(ME, "d", []).chosen == "grpc-stream"
    assert svc.chunk_size(0) == (1 << 20) - (64 << 10)  # capped by the message limit
    assert svc.chunk_size(1000) == 1000
    now[0] += 600_000
    with pytest.raises(NotPermitted, match="expired"):
        svc.fetch_target(ME, res.token, "a")
    with pytest.raises(NotPermitted, match="another identity"):
        svc.fetch_target("spiffe://t/agent/other", svc.offer(ME, "d", []).token, "a")
