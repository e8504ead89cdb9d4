"""The contractor: bids on tenders, accepts awards, runs activities, reports back.

Events go through the :class:`~.reporter.Reporter`: written to the contractor's own
outbox (SQLite) before they are sent and deleted only when the monitor acknowledges
them, so neither side's restart loses one. At most ``slots`` activities run at once;
accepted work beyond that waits in a queue.

Work is scoped to its monitor: a job is keyed by (monitor, campaign, activity,
attempt), and only that monitor may cancel it. Two monitors naming the same
(campaign, activity, attempt) get two separate jobs (in separate default working
dirs); they never run at the same time here, so a plugin's own (campaign, activity,
attempt) key always names exactly one run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from zambeze_mesh.agent.campaign_wire import event, key_of
from zambeze_mesh.agent.digests import output_detail, result_sha256
from zambeze_mesh.agent.reporter import Reporter
from zambeze_mesh.agent.staging import Prepared, Stager, run_scopes
from zambeze_mesh.errors import InvalidInput, ZmeshError
from zambeze_mesh.execution import Outcome, PluginRegistry, RunContext, RunRequest
from zambeze_mesh.scheduling import (
    ActivityDef,
    AgentInfo,
    Bid,
    TenderKey,
    activity_from_spec,
    agent_from_record,
    estimate_bid,
)
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.scheduling.model import match_key
from zambeze_mesh.security.owners import wire_owner
from zambeze_mesh.store import campaigns as cstore
from zambeze_mesh.v1 import scheduling_pb2

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent
    from zambeze_mesh.execution.sandbox import Jail

log = logging.getLogger("zambeze_mesh.contractor")

QUEUE_PER_SLOT = 512
LOAD_GOSSIP_INTERVAL_S = 1.0
#: A service interval (see Contractor._completed) older than this is not used: the
#: load it measured is gone.
SERVICE_MEMORY_S = 30.0


JobKey = tuple[str, TenderKey]
"""A contractor job's key: ``(monitor, (campaign, activity, attempt))``."""


@dataclass
class Job:
    """One accepted attempt."""

    key: TenderKey
    monitor: str
    act: ActivityDef
    item: scheduling_pb2.AwardItem
    cancelled: bool = False
    running: bool = False
    plugin_name: str = ""
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0  # the plugin's run time, once it ran
    handed_back: str = ""  # why this attempt is given back to its monitor (pilots)

    @property
    def job_key(self) -> JobKey:
        """``(monitor, key)``: jobs of different monitors never share a key."""
        return (self.monitor, self.key)

    inputs: list[dict[str, str]] = field(default_factory=list)
    """What the attempt read (uri, size, sha256...), for its final event."""


class Contractor:
    """Executes awarded activities on this agent."""

    def __init__(
        self, agent: Agent, registry: PluginRegistry, *, reporter: Reporter, stager: Stager
    ) -> None:
        self.agent = agent
        self.registry = registry
        self.stager = stager
        self.jobs: dict[JobKey, Job] = {}
        # Jobs waiting for another monitor's job with the same TenderKey to end.
        self._held: dict[TenderKey, list[Job]] = {}
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._running = 0
        self._workers: list[asyncio.Task[None]] = []
        self._loadtask: asyncio.Task[None] | None = None
        self.reporter = reporter
        # Learned run time per plugin (EWMA). Unknown = 0: a contractor without history
        # bids low, gets work and learns (exploration), instead of being starved.
        self._runtime: dict[str, float] = {}
        # Measured time between completions while saturated (EWMA per plugin): the
        # real cost of one more queued activity here, this process's other work
        # included (see scheduling.bidding.estimate_bid).
        self._service: dict[str, tuple[float, float]] = {}  # plugin -> (EWMA, when)
        self._last_done: float | None = None
        self._closing = False
        #: Optional admission gate (a pilot's drain policy, see zambeze_mesh.pilots):
        #: given the expected run time of an activity, the queue length, the free
        #: slots and the slots, a reason to refuse it now, or None to take it.
        self.gate: Callable[[float, int, int, int], str | None] | None = None

    @property
    def slots(self) -> int:
        return self.agent.config.slots

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Report attempts lost by a previous crash, then start workers and the reporter."""
        store = self.agent.require_store()
        lost = cstore.contracts_open(store)
        self.reporter.start()  # first whatever the outbox still holds
        for cid, act, attempt, monitor, _item in lost:
            ev = event(
                cid,
                act,
                st.FAILED,
                attempt=attempt,
                agent=self.agent.name,
                message="the contractor restarted and lost this attempt",
            )
            self.reporter.emit(monitor, ev, final=True)
        self.reporter.persist()  # closes the lost contracts before new work starts
        self._workers = [asyncio.create_task(self._worker()) for _ in range(self.slots)]
        self._loadtask = asyncio.create_task(self._load_loop())

    async def close(self) -> None:
        """Cancel running work and stop the workers (events stay in the outbox)."""
        self._closing = True
        for job in list(self.jobs.values()):
            if job.running:
                await self._cancel_job(job)
        tasks = [*self._workers, self._loadtask]
        for t in tasks:
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        await self.reporter.close()

    # ------------------------------------------------------------ bidding
    def _self_info(self) -> AgentInfo | None:
        gossip = self.agent.gossip
        rec = gossip.record_of(self.agent.name) if gossip is not None else None
        return agent_from_record(rec, "alive") if rec is not None else None

    def bids(self, req: scheduling_pb2.CallForProposalsRequest) -> list[Bid]:
        """Answer a call for proposals: one bid or refusal per tender.

        Each tender is bid on as if it were the only one (the monitor corrects the
        bids of a burst with their ``marginal_s`` as it awards them).
        """
        me = self._self_info()
        queued = self._queue.qsize()
        free = max(0, self.slots - self._running)
        busy = "shutting down" if self._closing else "queue is full" if self._full() else ""
        # Look-alike tenders (same match_key) get the same answer: parse one of each.
        answers: dict[tuple[object, ...], Bid] = {}
        out = []
        for t in req.tenders:
            key = key_of(t)
            if busy:
                out.append(Bid.busy_refusal(key, busy))
                continue
            elided = t.function_bytes > 0
            profile = (t.owner, *match_key(t.spec, function_elided=elided))
            answer = answers.get(profile)
            if answer is None:
                try:
                    act = activity_from_spec(t.spec, function_elided=elided)
                    refused = self._policy_refusal(req.monitor, t, act)
                except InvalidInput as exc:
                    refused = str(exc)
                if refused is not None:
                    out.append(Bid.refusal(key, refused))
                    continue
                answer = answers[profile] = estimate_bid(
                    act,
                    key=key,
                    agent=me,
                    queue_len=queued,
                    free_slots=free,
                    slots=self.slots,
                    avg_runtime_s=self._runtime.get(act.plugin, 0.0),
                    service_interval_s=self._service_interval(act.plugin),
                )
                gated = self._gated(act, queued, free)
                if gated and not answer.refused:
                    answer = answers[profile] = Bid.busy_refusal(key, gated)
            out.append(dataclasses.replace(answer, key=key))
        return out

    def _policy_refusal(
        self, monitor: str, t: scheduling_pb2.Tender, act: ActivityDef
    ) -> str | None:
        """Why this agent's execution policy refuses the tender, or None."""
        policy = self.agent.execution_policy
        if not policy.rules:
            return None
        if t.owner and not t.owner.startswith("spiffe://"):
            raise InvalidInput(f"tender owner {t.owner[:80]!r} is not a SPIFFE ID")
        owner = wire_owner(self.agent.mesh, monitor, t.owner)
        function = act.is_function or t.function_bytes > 0
        return policy.refusal(owner, act.plugin, function=function)

    def _gated(self, act: ActivityDef, queued: int, free: int) -> str | None:
        if self.gate is None:
            return None
        return self.gate(self.expected_runtime(act.plugin), queued, free, self.slots)

    def expected_runtime(self, plugin: str) -> float:
        """The measured run time of ``plugin``'s activities here (0 when unknown)."""
        return max(self._runtime.get(plugin, 0.0), self._service_interval(plugin))

    def _full(self) -> bool:
        limit = self.agent.config.max_queued or self.slots * QUEUE_PER_SLOT
        return len(self.jobs) >= limit

    # ------------------------------------------------------------ awards
    def award(
        self,
        req: scheduling_pb2.AwardRequest,
        known: dict[TenderKey, ActivityDef] | None = None,
    ) -> list[scheduling_pb2.AwardDecision]:
        """Accept (and queue) or reject each awarded activity.

        ``known``: activities already validated by this agent's own monitor (the
        in-process award), so they are not parsed again.
        """
        decisions = []
        accepted: list[Job] = []
        monitor = req.monitor
        for item in req.items:
            key = key_of(item.tender)
            jkey = (monitor, key)
            d = scheduling_pb2.AwardDecision(
                campaign_id=key.campaign_id, activity=key.activity, attempt=key.attempt
            )
            if jkey in self.jobs:
                if self.jobs[jkey].cancelled:
                    d.reason = "this attempt is being cancelled here"
                else:
                    d.accepted = True
            elif item.monitor and item.monitor != monitor:
                d.reason = f"award item names monitor {item.monitor!r}, the award {monitor!r}"
            elif self._full() or self._closing:
                d.reason = "slots gone: queue is full"
            else:
                try:
                    act = (known or {}).get(key) or activity_from_spec(item.tender.spec)
                    refused = self._policy_refusal(monitor, item.tender, act)
                    if refused is None:
                        refused = self._gated(
                            act,
                            self._queue.qsize() + len(accepted),
                            max(0, self.slots - self._running - len(accepted)),
                        )
                except InvalidInput as exc:
                    refused = str(exc)
                if refused is not None:
                    d.reason = refused
                else:
                    job = Job(key, monitor, act, item)
                    self.jobs[jkey] = job
                    accepted.append(job)
                    d.accepted = True
            decisions.append(d)
        if accepted:
            with self.agent.require_store().tx() as db:
                for job in accepted:
                    cstore.contract_put(
                        db,
                        job.monitor,
                        job.key.campaign_id,
                        job.key.activity,
                        job.key.attempt,
                        job.item.SerializeToString(),
                        st.AWARDED,
                    )
            for job in accepted:
                self._queue.put_nowait(job)
        return decisions

    # ------------------------------------------------------------ running
    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            if job.cancelled:
                continue
            if self._other_running(job):
                self._held.setdefault(job.key, []).append(job)
                continue
            self._running += 1
            job.running = True
            try:
                outcome = await self._run(job)
            except asyncio.CancelledError:
                raise
            except ZmeshError as exc:
                outcome = Outcome("FAILED", message=str(exc))
            except Exception as exc:
                log.exception("activity crashed the contractor path")
                outcome = Outcome("FAILED", message=f"{type(exc).__name__}: {exc}")
            finally:
                self._running -= 1
                job.running = False
            if job.cancelled or job.handed_back:
                outcome = self._stopped_outcome(job, "cancelled")
            self._finish(job, outcome)
            self._completed(job)

    def _other_running(self, job: Job) -> bool:
        """Whether another monitor's job with the same TenderKey is running here."""
        return any(
            other.running and other.key == job.key and other is not job
            for (mon, _), other in self.jobs.items()
            if mon != job.monitor
        )

    def _release_held(self, key: TenderKey) -> None:
        """Queue again the jobs that waited for ``key``'s running job to end."""
        for job in self._held.pop(key, []):
            self._queue.put_nowait(job)

    def _completed(self, job: Job) -> None:
        """Learn the service interval from completions that follow each other while
        work was waiting (an idle gap says nothing about this agent's capacity).

        A job far slower than this plugin's usual run time (a worker being started,
        a one-off) is not a sample, so one outlier cannot price the agent out."""
        now = time.monotonic()
        plugin = job.act.plugin
        saturated = self._queue.qsize() > 0 or self._running >= self.slots
        usual = self._runtime.get(plugin, 0.0)
        if self._last_done is not None and job.elapsed <= 10 * max(usual, 0.001):
            gap = now - self._last_done
            old = self._service.get(plugin)
            value = gap if old is None else 0.8 * old[0] + 0.2 * gap
            self._service[plugin] = (value, now)
        self._last_done = now if saturated else None

    def _service_interval(self, plugin: str) -> float:
        """The learned service interval, if learned in the last SERVICE_MEMORY_S."""
        learned = self._service.get(plugin)
        if learned is None or time.monotonic() - learned[1] > SERVICE_MEMORY_S:
            return 0.0
        return learned[0]

    async def _run(self, job: Job) -> Outcome:
        spec = job.item.tender.spec
        prepared = await self.stager.prepare(job, self._emitter(job))
        if job.act.kind == "transfer":
            outcome = await self.stager.transfer(job, prepared, self._emitter(job))
            await self._digest_outputs(Path(outcome.detail["path"]), outcome)
            return outcome
        plugin = self.registry.for_kind(job.act.kind, job.act.plugin)
        job.plugin_name = plugin.name
        req = RunRequest(
            campaign_id=job.key.campaign_id,
            activity=job.key.activity,
            attempt=job.key.attempt,
            kind=job.act.kind,
            spec=prepared.spec if prepared.spec is not None else spec,
            working_dir=prepared.working_dir,
            output_dir=prepared.output_dir,
            agent_dir=self.agent.data_dir,
            env=prepared.env,
            timeout_s=job.act.timeout_s or None,
            sandbox=self._jail(job, prepared),
        )
        started = time.monotonic()
        outcome = await plugin.run(req, RunContext(emit=self._emitter(job)))
        elapsed = time.monotonic() - started
        job.elapsed = elapsed
        old = self._runtime.get(job.act.plugin)
        self._runtime[job.act.plugin] = elapsed if old is None else 0.8 * old + 0.2 * elapsed
        outcome.detail.setdefault("output_dir", str(prepared.output_dir))
        if outcome.result:
            outcome.detail["result_sha256"] = result_sha256(outcome.result)
        shared = spec.WhichOneof("body") == "python" and spec.python.function
        if not (shared and not spec.output_dir):  # functions share one default dir
            await self._digest_outputs(prepared.output_dir, outcome)
        return outcome

    def _jail(self, job: Job, prepared: Prepared) -> Jail | None:
        """The sandbox of a run: its own dirs writable, its inputs and script and its
        campaign's dir readable. Shipped functions share warm workers, so their jail
        is wider (``sandbox_functions``): the owner's whole dir under ``runs/``
        (``"owner"``: one warm worker serves every campaign of that owner through
        that monitor, which keeps one spare worker started ahead), the campaign's
        (``"campaign"``) or every campaign's (``"shared"``), writable."""
        sandbox = self.agent.sandbox
        if sandbox is None:
            return None
        spec = job.item.tender.spec
        rw = [prepared.working_dir, prepared.output_dir]
        ro = list(prepared.inputs)
        script = prepared.env.get("ZMESH_SCRIPT")
        if script:
            ro.append(Path(script))
        owner_scope, campaign_scope = run_scopes(self.agent.mesh, job)
        if spec.WhichOneof("body") != "python" or not spec.python.function:
            return sandbox.for_run(campaign_scope, rw, ro)
        mode = self.agent.config.sandbox_functions
        scope = {"owner": owner_scope, "shared": ""}.get(mode, campaign_scope)
        shared_dir = self.agent.data_dir / "runs" / scope
        shared_dir.mkdir(parents=True, exist_ok=True)  # a custom working dir elsewhere
        rw.append(shared_dir)
        # Per owner (or shared), the next campaign comes to the same workers: keep
        # one started ahead, so a call that finds the warm one busy need not wait.
        return sandbox.for_run(scope, rw, ro, spare=mode != "campaign")

    async def _digest_outputs(self, path: Path, outcome: Outcome) -> None:
        """Add the size and sha256 of what a successful attempt produced to its detail."""
        if outcome.state != "SUCCEEDED":
            return
        catalog = self.agent.datasvc.catalog
        outcome.detail.update(await asyncio.to_thread(output_detail, catalog, path))

    def _emitter(self, job: Job):  # type: ignore[no-untyped-def]
        async def emit(state: str, message: str = "", detail: dict[str, str] | None = None) -> None:
            if job.cancelled:
                return
            self._emit(job, state, message, detail or {})

        return emit

    def _finish(self, job: Job, outcome: Outcome) -> None:
        detail = dict(outcome.detail)
        if outcome.exit_code is not None:
            detail["exit_code"] = str(outcome.exit_code)
        if outcome.stderr_tail:
            detail["stderr_tail"] = outcome.stderr_tail
        if outcome.stdout_tail:
            detail["stdout_tail"] = outcome.stdout_tail
        detail.setdefault("plugin", job.plugin_name or job.act.plugin or job.act.kind)
        if job.inputs:
            detail["inputs"] = json.dumps(job.inputs, separators=(",", ":"))
        self._emit(job, outcome.state, outcome.message, detail, outcome.result, final=True)
        if self.jobs.get(job.job_key) is job:
            del self.jobs[job.job_key]
        self._drop_held(job)
        self._release_held(job.key)

    def _drop_held(self, job: Job) -> None:
        held = self._held.get(job.key)
        if held and job in held:
            held.remove(job)
            if not held:
                del self._held[job.key]

    def _emit(
        self,
        job: Job,
        state: str,
        message: str,
        detail: dict[str, str],
        result: bytes = b"",
        *,
        final: bool = False,
    ) -> None:
        ev = event(
            job.key.campaign_id,
            job.key.activity,
            state,
            attempt=job.key.attempt,
            agent=self.agent.name,
            message=message,
            detail=detail,
            result=result,
        )
        self.reporter.emit(job.monitor, ev, final=final)

    # ------------------------------------------------------------ cancel
    async def cancel(self, refs: list[scheduling_pb2.ActivityRef], monitor: str) -> int:
        """Stop matching attempts of ``monitor``'s jobs (attempt 0 = any attempt).

        Jobs of other monitors are never touched, whatever the refs name."""
        count = 0
        for ref in refs:
            for (mon, key), job in list(self.jobs.items()):
                if mon != monitor:
                    continue
                if key.campaign_id != ref.campaign_id or key.activity != ref.activity:
                    continue
                if ref.attempt and key.attempt != ref.attempt:
                    continue
                await self._cancel_job(job)
                count += 1
        return count

    async def _cancel_job(self, job: Job) -> None:
        job.cancelled = True
        if job.running and job.plugin_name:
            plugin = self.registry.loaded.get(job.plugin_name)
            if plugin is not None:
                await plugin.cancel(job.key.campaign_id, job.key.activity, job.key.attempt)
        elif not job.running:
            self._finish(job, self._stopped_outcome(job, "cancelled before it started"))

    async def hand_back(self, key: JobKey, reason: str) -> bool:
        """Give an accepted attempt back to its monitor (stopping it if it runs).

        The monitor offers it again without counting a failure (a pilot does this
        before its walltime). False when there is no such attempt here any more.
        """
        job = self.jobs.get(key)
        if job is None or job.cancelled:
            return False
        job.handed_back = job.handed_back or reason or "handed back"
        log.info(
            "handing back %s/%s attempt %d of %s: %s",
            *dataclasses.astuple(key[1]),
            key[0],
            reason,
        )
        await self._cancel_job(job)
        return True

    def mark_handed_back(self, reason: str) -> None:
        """Mark every accepted attempt as handed back (they report so however they end);
        :meth:`hand_back` then stops them."""
        for job in self.jobs.values():
            if not job.handed_back:
                job.handed_back = reason

    @staticmethod
    def _stopped_outcome(job: Job, message: str) -> Outcome:
        if job.handed_back:
            return Outcome(
                "FAILED",
                message=f"handed back: {job.handed_back}",
                detail={"handed_back": "1"},
            )
        return Outcome("CANCELLED", message=message)

    # ------------------------------------------------------------ load
    async def _load_loop(self) -> None:
        """Gossip free slots when they change (at most once per interval)."""
        while True:
            await asyncio.sleep(LOAD_GOSSIP_INTERVAL_S)
            gossip = self.agent.gossip
            if gossip is not None:
                gossip.set_load(max(0, self.slots - self._running - self._queue.qsize()))
