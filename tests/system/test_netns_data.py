"""``tls-stream`` across network namespaces, and its fallback when the data port is
blocked with nftables (gRPC still passes): the STAGING events say which method moved
the bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.system.faults import PORT, WORKER, AgentPlan, S, lab_mesh, marked, run, submit
from tests.system.faults import follow as follow_events

pytestmark = [pytest.mark.netns, pytest.mark.slow]

MiB = 1 << 20
TABLE = "zmdata"
# Only gRPC (and admission) may reach the holder; new connections to any other TCP
# port (its data port) are dropped, so they time out as behind a real firewall.
DATA_PORT_BLOCKED = f"""
table inet {TABLE} {{
  chain input {{
    type filter hook input priority 0; policy accept;
    iif "lo" accept
    ct state established,related accept
    tcp dport {{ {PORT}, {PORT + 1} }} accept
    tcp flags syn drop
  }}
}}
"""


def staged(events: list[S.Event], activity: str) -> dict[str, str]:
    done = [
        e
        for e in events
        if e.activity == activity and e.state == S.ACTIVITY_STATE_STAGING and "bytes" in e.detail
    ]
    assert len(done) == 1, [e.detail for e in events if e.activity == activity]
    return dict(done[0].detail)


def test_tls_stream_between_namespaces_and_grpc_stream_when_its_port_is_blocked(
    tmp_path: Path,
) -> None:
    """Injects: an nftables table in the holder's namespace that drops new TCP
    connections to every port but gRPC's. Before: the worker stages its input over
    ``tls-stream``; after: over ``grpc-stream``, with ``fallback_from=tls-stream`` in
    the STAGING event, and the bytes are right both times."""
    markers = tmp_path / "markers"
    with lab_mesh(tmp_path, [AgentPlan(worker=False), AgentPlan()], prefix="zd") as (lab, ags):
        holder = ags[0]
        for name in ("one.bin", "two.bin"):
            (holder.data_dir / name).write_bytes(os.urandom(3 * MiB))

        def act(name: str, uri: str) -> S.ActivitySpec:
            body = 'test "$(stat -c %s "$ZMESH_INPUT_0")" = 3145728'
            return marked(markers, name, body, requires=WORKER, data_uris=[uri])

        cid = run(submit(holder, "direct", [act("direct", f"{holder.name}://one.bin")]))
        events = run(follow_events(holder, cid))
        detail = staged(events, "direct")
        assert detail["method"] == "tls-stream" and "fallback_from" not in detail, detail
        assert detail["bytes"] == str(3 * MiB) and float(detail["rate_mib_s"]) > 0

        lab.hosts[0].run("nft", "-f", "-", input=DATA_PORT_BLOCKED)
        try:
            cid = run(submit(holder, "blocked", [act("blocked", f"{holder.name}://two.bin")]))
            events = run(follow_events(holder, cid))
        finally:
            lab.hosts[0].run("nft", "delete", "table", "inet", TABLE, check=False)
        detail = staged(events, "blocked")
        assert detail["method"] == "grpc-stream", detail
        assert detail["fallback_from"] == "tls-stream", detail
        assert detail["bytes"] == str(3 * MiB)
        final = [e for e in events if not e.activity and e.campaign_state]
        assert final[-1].campaign_state == S.CAMPAIGN_STATE_SUCCEEDED, final
