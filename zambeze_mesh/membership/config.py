"""Tunables of the SWIM + Lifeguard membership protocol.

The presets follow HashiCorp memberlist's ``DefaultLANConfig``,
``DefaultWANConfig`` and a fast ``local`` profile for tests on one host.
All durations are in seconds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Membership protocol parameters (memberlist names in brackets)."""

    probe_interval: float = 1.0
    """Time between direct probes of one random member [ProbeInterval]."""
    probe_timeout: float = 0.5
    """Wait for a direct ack before probing indirectly [ProbeTimeout]."""
    indirect_checks: int = 3
    """Peers asked to probe on our behalf (k) [IndirectChecks]."""
    suspicion_mult: int = 4
    """Min suspicion timeout = mult * max(1, log10(N)) * probe_interval [SuspicionMult]."""
    suspicion_max_timeout_mult: int = 6
    """Max suspicion timeout as a multiple of the min [SuspicionMaxTimeoutMult]."""
    retransmit_mult: int = 4
    """Each update is sent mult * ceil(log10(N + 1)) times [RetransmitMult]."""
    push_pull_interval: float = 30.0
    """Full-state sync with one random member, scaled up for large meshes [PushPullInterval]."""
    gossip_interval: float = 0.2
    """Time between gossip rounds [GossipInterval]."""
    gossip_nodes: int = 3
    """Members sent a gossip message per round [GossipNodes]."""
    gossip_to_the_dead_time: float = 30.0
    """Keep gossiping to a member this long after it died [GossipToTheDeadTime]."""
    awareness_max_multiplier: int = 8
    """Lifeguard: probe interval and timeout scale up to this factor [AwarenessMaxMultiplier]."""
    max_piggyback: int = 32
    """At most this many updates ride on one message."""
    nack_fraction: float = 0.8
    """An indirect prober answers nack after this fraction of probe_timeout."""
    startup_syncs: int = 4
    """After start, the first push-pulls come after 1, 2, 4, ... probe intervals (this many),
    so a mesh forming from scratch converges in O(log N) rounds by anti-entropy."""
    dead_sync_every: int = 2
    """Every this many push-pull rounds also sync with a random dead member, so a
    healed partition reconverges without operator action (0 disables)."""
    dead_retention: float = 3600.0
    """Forget dead members after this long."""
    left_retention: float = 600.0
    """Forget members that left after this long."""
    request_timeout: float = 5.0
    """Edge: timeout of one sync request (pings use the probe timings)."""

    def __post_init__(self) -> None:
        if self.probe_interval <= 0 or self.probe_timeout <= 0:
            raise ValueError("probe_interval and probe_timeout must be positive")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError("probe_timeout must be shorter than probe_interval")
        if self.gossip_interval <= 0 or self.push_pull_interval <= 0:
            raise ValueError("gossip_interval and push_pull_interval must be positive")
        if self.indirect_checks < 0 or self.gossip_nodes < 1 or self.max_piggyback < 1:
            raise ValueError("indirect_checks >= 0, gossip_nodes >= 1, max_piggyback >= 1")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise ValueError("suspicion multipliers must be >= 1")
        if self.startup_syncs < 0 or self.dead_sync_every < 0:
            raise ValueError("startup_syncs and dead_sync_every must be >= 0")
        if self.retransmit_mult < 1 or self.awareness_max_multiplier < 1:
            raise ValueError("retransmit_mult and awareness_max_multiplier must be >= 1")

    @classmethod
    def lan(cls) -> Config:
        """memberlist ``DefaultLANConfig``."""
        return cls()

    @classmethod
    def wan(cls) -> Config:
        """memberlist ``DefaultWANConfig``: slower, more tolerant timings."""
        return cls(
            probe_interval=5.0,
            probe_timeout=3.0,
            suspicion_mult=6,
            push_pull_interval=60.0,
            gossip_interval=0.5,
            gossip_nodes=4,
            gossip_to_the_dead_time=60.0,
            request_timeout=10.0,
        )

    @classmethod
    def local(cls) -> Config:
        """Fast timings for agents on one host or a quiet LAN segment (tests, demos).

        Probes every 0.5 s with a 0.25 s timeout (Lifeguard stretches both up to 8x on
        an overloaded agent); a crash is declared within a few seconds. Faster settings
        gave false suspicions with 20 Python agents sharing 2 busy cores.
        """
        return cls(
            probe_interval=0.5,
            probe_timeout=0.25,
            indirect_checks=3,
            suspicion_mult=4,
            retransmit_mult=3,
            push_pull_interval=5.0,
            gossip_interval=0.1,
            gossip_to_the_dead_time=5.0,
            dead_sync_every=1,
            dead_retention=600.0,
            left_retention=120.0,
            request_timeout=2.0,
        )

    def replace(self, **changes: object) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def retransmit_limit(self, n: int) -> int:
        """How many times one update is sent in a mesh of ``n`` members."""
        return self.retransmit_mult * math.ceil(math.log10(n + 1))

    def suspicion_timeout(self, n: int) -> float:
        """Minimum suspicion timeout in a mesh of ``n`` members."""
        scale = max(1.0, math.log10(max(1.0, float(n))))
        return self.suspicion_mult * scale * self.probe_interval

    def push_pull_scaled(self, n: int) -> float:
        """Push-pull interval grown for meshes above 32 members (memberlist pushPullScale)."""
        if n <= 32:
            return self.push_pull_interval
        mult = math.ceil(math.log2(n) - math.log2(32)) + 1
        return self.push_pull_interval * mult
