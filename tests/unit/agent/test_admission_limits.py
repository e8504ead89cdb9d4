"""The admission listener's per-source token bucket, and rotation of agent.out."""

from __future__ import annotations

from pathlib import Path

from zambeze_mesh.agent.ratelimit import RateLimiter, source_of
from zambeze_mesh.settings.logs import rotate_if_large


def test_bucket_allows_a_burst_then_the_rate_per_source() -> None:
    now = [0.0]
    rl = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [rl.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("a") == 0.5  # one token comes back every 0.5 s
    assert rl.take("b") == 0.0  # another source has its own bucket
    now[0] = 0.5
    assert rl.take("a") == 0.0
    now[0] = 100.0
    assert [rl.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled only to the burst
    assert rl.take("a") > 0


def test_source_of_peer_strings() -> None:
    assert source_of("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert source_of("ipv6:[::1]:5555") == "::1"
    assert source_of("unix:/tmp/s") == "unix:/tmp/s"


def test_agent_out_rotates_when_large(tmp_path: Path) -> None:
    out = tmp_path / "agent.out"
    out.write_text("x" * 100)
    rotate_if_large(out, 1000)
    assert out.exists() and not (tmp_path / "agent.out.1").exists()
    rotate_if_large(out, 10)
    assert not out.exists() and (tmp_path / "agent.out.1").read_text() == "x" * 100
