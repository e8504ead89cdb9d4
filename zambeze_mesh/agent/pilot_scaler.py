"""The autoscaler loop: submits pilots when activities only pilots could run wait.

Runs inside an agent whose config has a ``scheduler`` and a ``[pilots]`` table with
``max > 0``. Every :data:`TICK_S` it collects the activities this agent monitors that
wait for room and would fit a pilot (by labels and resources: see :meth:`fits_pilot`)
but no current member, asks :func:`.scale.decide`, and submits what it says through
:func:`.jobs.submit_pilot`. Placement holds such activities (instead of failing them
for want of a bidder) while pilots can still come. Every decision that submits is
logged (``pilots.scale``) and named in the waiting activities' message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from zambeze_mesh.membership.status import LIVE
from zambeze_mesh.pilots import jobs
from zambeze_mesh.pilots.scale import Decision, decide
from zambeze_mesh.scheduling import TenderKey, agent_from_record
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.scheduling.matching import fits
from zambeze_mesh.scheduling.model import ActivityDef, AgentInfo
from zambeze_mesh.settings.logs import log_event
from zambeze_mesh.settings.pilots import PilotPolicy
from zambeze_mesh.store.db import Store

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent

log = logging.getLogger("zambeze_mesh.pilots")

TICK_S = 1.0


class PilotScaler:
    """Submits pilots for the backlog of pilot-only activities (see the module doc)."""

    def __init__(self, agent: Agent, policy: PilotPolicy) -> None:
        self.agent = agent
        self.policy = policy
        self._since: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._submitting = 0
        self.decisions: list[Decision] = []

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        """Stop the loop (pilots already submitted run on)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _pilot_info(self) -> AgentInfo:
        gossip = self.agent.gossip
        me = gossip.record_of(self.agent.name) if gossip is not None else None
        plugins = frozenset(self.agent.registry.names() if self.agent.registry else []) - {"batch"}
        caps = me.capabilities if me is not None else None
        return AgentInfo(
            name=f"{self.agent.name}-pilot-?",
            plugins=plugins | {"shell", "python"},
            cpus=caps.cpus if caps else (os.cpu_count() or 1),
            memory_bytes=caps.memory_bytes if caps else 0,
            gpus=caps.gpus if caps else 0,
            slots=max(1, self.policy.slots or 1),
            labels={**self.policy.labels, "scheduler": self.agent.config.scheduler},
            transfer_methods=tuple(self.agent.config.transfer_methods),
            accept_functions=True,
        )

    def fits_pilot(self, act: ActivityDef) -> bool:
        """Could a pilot of this agent run ``act``, while no member but pilots can?"""
        if fits(act, self._pilot_info()) is not None:
            return False
        gossip = self.agent.gossip
        for m in gossip.members() if gossip is not None else []:
            if m.record is None or m.status not in LIVE:
                continue
            if "pilot" in m.record.capabilities.labels:
                continue  # pilots are what this decides about
            if fits(act, agent_from_record(m.record, m.status)) is None:
                return False
        return True

    def hold(self, key: TenderKey) -> bool:
        """Placement asks: keep ``key`` waiting (for a pilot) rather than fail it?"""
        monitor = self.agent.monitor
        live = monitor.live.get(key.campaign_id) if monitor is not None else None
        if live is None or self.policy.max <= 0:
            return False
        try:
            return self.fits_pilot(live.dag.activity(key.activity))
        except KeyError:
            return False

    def _waiting(self, now: float) -> list[float]:
        monitor = self.agent.monitor
        seen: set[tuple[str, str]] = set()
        out = []
        for live in list(monitor.live.values()) if monitor is not None else []:
            if live.state != "RUNNING":
                continue
            for name, row in list(live.acts.items()):
                if row.state != st.READY or not self.fits_pilot(live.dag.activity(name)):
                    continue
                k = (live.id, name)
                seen.add(k)
                out.append(now - self._since.setdefault(k, now))
        for k in set(self._since) - seen:
            del self._since[k]
        return out

    def _pilots(self) -> tuple[int, int]:
        store = self.agent.require_store()
        up = starting = 0
        rows = [r for r in jobs.list_rows(store) if r.state == "submitted"]
        unstarted = [r for r in rows if not r.pilot_state()]
        states = jobs.scheduler_states(self.agent.config, [r.job_id for r in unstarted])
        for r in rows:
            mesh = r.pilot_state().get("mesh")
            if mesh in ("alive", "draining"):
                up += 1
            elif mesh in (None, "joining") and (
                mesh == "joining" or states.get(r.job_id) in ("QUEUED", "ACTIVE", "NEW")
            ):
                starting += 1
        return up, starting + self._submitting

    async def tick(self) -> Decision:
        """One decision (and the submissions it asks for)."""
        waiting = self._waiting(time.monotonic())
        up, starting = await asyncio.to_thread(self._pilots)
        d = decide(self.policy, waiting_s=waiting, pilots_up=up, pilots_starting=starting)
        if d.submit:
            self.decisions.append(d)
            log_event(
                log,
                "pilots.scale",
                submit=d.submit,
                reason=d.reason,
                up=up,
                starting=starting,
                waiting=len(waiting),
            )
            jobs.record_event(
                self.agent.require_store(),
                "scale",
                f"submit {d.submit}: {d.reason} ({up} up, {starting} starting)",
            )
            for _ in range(d.submit):
                self._submitting += 1
                try:
                    row = await asyncio.to_thread(self._submit)
                    log_event(log, "pilots.submitted", pilot=row.name, job_id=row.job_id)
                except Exception as exc:
                    log_event(log, "pilots.submit_failed", level=logging.WARNING, reason=str(exc))
                    jobs.record_event(self.agent.require_store(), "submit_failed", str(exc))
                finally:
                    self._submitting -= 1
        return d

    def _submit(self) -> jobs.PilotRow:
        store = Store(self.agent.home.db)
        try:
            return jobs.submit_pilot(
                self.agent.home,
                store,
                nodes=self.policy.nodes,
                walltime=self.policy.walltime,
                slots=self.policy.slots,
                labels=dict(self.policy.labels),
                idle_timeout_s=self.policy.idle_timeout_s,
            )
        finally:
            store.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pilot autoscaler tick failed")
            await asyncio.sleep(TICK_S)
