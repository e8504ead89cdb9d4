"""The contractor: bids on tenders, accepts awards, runs activities, reports back.

This is the async shell around :class:`~zambeze_mesh.control.contractor.ContractorMachine`,
which owns the jobs, slots, queue, cancels and hand-backs: the shell turns awards,
process completions, cancels and timers into the machine's inputs and carries out
its effects (write contracts, start and kill runs through the execution plugins,
events through the :class:`~.reporter.Reporter`). The time comes from an injected
clock.

Events are written to the contractor's own outbox (SQLite) before they are sent and
deleted only when the monitor acknowledges them, so neither side's restart loses
one. At most ``slots`` activities run at once; accepted work beyond that waits in a
queue, and an accepted job runs only once its contract is written.

Work is scoped to its monitor: a job is keyed by (monitor, campaign, activity,
attempt), and only that monitor may cancel it. Two attempts of one activity (two
monitors naming the same key included) never run at the same time here, so a
plugin's own (campaign, activity, attempt) key always names exactly one run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from zambeze_mesh.agent.campaign_wire import event, key_of
from zambeze_mesh.agent.digests import output_detail, result_sha256
from zambeze_mesh.agent.reporter import Reporter
from zambeze_mesh.agent.staging import Prepared, Stager, run_scopes
from zambeze_mesh.control.contractor import ContractorMachine, JobRecord
from zambeze_mesh.control.jobs import (
    Awarded,
    AwardItem,
    CancelRequested,
    Close,
    ContractorConfig,
    Effects,
    Emit,
    Finished,
    Gate,
    HandBack,
    Input,
    Kill,
    Load,
    Lost,
    MarkHandedBack,
    Persist,
    Persisted,
    PersistFailed,
    Progress,
    Start,
    Started,
    Tick,
)
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
    from zambeze_mesh.data.catalog import Catalog
    from zambeze_mesh.execution.sandbox import Jail, Sandbox
    from zambeze_mesh.settings.policy import ExecutionPolicy
    from zambeze_mesh.store import Store
    from zambeze_mesh.v1 import common_pb2

log = logging.getLogger("zambeze_mesh.contractor")

QUEUE_PER_SLOT = 512
LOAD_GOSSIP_INTERVAL_S = 1.0
#: A service interval (see ContractorMachine) older than this is not used: the load
#: it measured is gone.
SERVICE_MEMORY_S = 30.0
#: Set (to anything but "" or "0") to make the contractor's machine raise on an
#: illegal job transition instead of logging and refusing it (tests set it).
STRICT_ENV = "ZMESH_STRICT_MACHINES"


JobKey = tuple[str, TenderKey]
"""A contractor job's key: ``(monitor, (campaign, activity, attempt))``."""


class Members(Protocol):
    """What the contractor needs of membership (the agent's gossip)."""

    def record_of(self, name: str) -> common_pb2.AgentRecord | None:
        """The latest verified record of ``name`` (this agent's own included)."""
        ...

    def set_load(self, free_slots: int) -> None:
        """Gossip this agent's free slots."""
        ...


@dataclass
class Job:
    """One accepted attempt: what the shell needs to run it. Its state lives in the
    machine (``record``)."""

    key: TenderKey
    monitor: str
    act: ActivityDef
    item: scheduling_pb2.AwardItem
    plugin_name: str = ""
    started: float = 0.0  # when it was accepted (the contractor's clock)
    elapsed: float | None = None  # the plugin's run time, once it ran
    record: JobRecord | None = None

    @property
    def job_key(self) -> JobKey:
        """``(monitor, key)``: jobs of different monitors never share a key."""
        return (self.monitor, self.key)

    @property
    def running(self) -> bool:
        """Whether it holds a slot (staging, running or being stopped)."""
        return self.record is not None and self.record.running

    @property
    def cancelled(self) -> bool:
        """Whether it was told to stop while running (cancel, hand-back, close)."""
        return self.record is not None and self.record.stopping

    @property
    def handed_back(self) -> str:
        """Why this attempt is given back to its monitor ('' = it is not; pilots)."""
        return self.record.handed_back if self.record is not None else ""

    inputs: list[dict[str, str]] = field(default_factory=list)
    """What the attempt read (uri, size, sha256...), for its final event."""


class Contractor:
    """Executes awarded activities on this agent.

    Built from what it uses: this agent's ``name`` and ``mesh``, its ``slots`` and
    ``max_queued`` (config), ``sandbox_functions`` (how widely shipped functions share
    a jail), ``data_dir`` (``@agentdir``), the execution ``policy``, the ``store``
    (contracts), ``members`` (its own record for bids; where its load is gossiped),
    the data service's digest ``catalog``, the activities' ``sandbox`` (None: none),
    the plugin ``registry``, the ``reporter`` (outbox) and the ``stager``.
    """

    def __init__(
        self,
        *,
        name: str,
        mesh: str,
        slots: int,
        max_queued: int,
        sandbox_functions: str,
        data_dir: Path,
        policy: ExecutionPolicy,
        store: Store,
        members: Members,
        catalog: Catalog,
        sandbox: Sandbox | None,
        registry: PluginRegistry,
        reporter: Reporter,
        stager: Stager,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.mesh = mesh
        self.sandbox_functions = sandbox_functions
        self.data_dir = data_dir
        self.policy = policy
        self.store = store
        self.members = members
        self.catalog = catalog
        self.sandbox = sandbox
        self.registry = registry
        self.clock = clock
        self.stager = stager
        config = ContractorConfig(
            slots=slots,
            max_queued=max_queued,
            queue_per_slot=QUEUE_PER_SLOT,
            service_memory_s=SERVICE_MEMORY_S,
            strict=os.environ.get(STRICT_ENV, "") not in ("", "0"),
        )
        self.machine = ContractorMachine(config)
        self.jobs: dict[JobKey, Job] = {}
        self._tasks: dict[JobKey, asyncio.Task[None]] = {}
        self._loadtask: asyncio.Task[None] | None = None
        self.reporter = reporter

    @property
    def slots(self) -> int:
        return self.machine.slots

    @property
    def gate(self) -> Gate | None:
        """Optional admission gate (a pilot's drain policy, see zambeze_mesh.pilots):
        given the expected run time of an activity, the queue length, the free slots
        and the slots, a reason to refuse it now, or None to take it."""
        return self.machine.gate

    @gate.setter
    def gate(self, gate: Gate | None) -> None:
        self.machine.gate = gate

    # ------------------------------------------------------------ the machine
    def _step(self, inp: Input) -> tuple[Effects, list[Kill]]:
        """Step the machine and carry out its effects; returns the step's answers
        and the kills for the caller to await."""
        fx = self.machine.step(self.clock(), inp)
        return fx, self._carry_out(fx)

    def _carry_out(self, fx: Effects) -> list[Kill]:
        """Carry out a step's effects, and those of the steps they lead to (a written
        contract lets its job run); returns the kills to await. A failed contract
        write is re-raised once the machine has forgotten those jobs."""
        kills: list[Kill] = []
        failure: BaseException | None = None
        pending: deque[Input] = deque()
        while True:
            for effect in fx.effects:
                if isinstance(effect, Persist):
                    try:
                        self._persist(effect)
                    except Exception as exc:
                        failure = exc
                        pending.append(PersistFailed(effect.jobs))
                    else:
                        pending.append(Persisted(effect.jobs))
                elif isinstance(effect, Start):
                    job = self.jobs[effect.job]  # type: ignore[index]
                    self._tasks[job.job_key] = asyncio.create_task(self._execute(job))
                elif isinstance(effect, Kill):
                    kills.append(effect)
                elif isinstance(effect, Emit):
                    self._emit(effect)
                elif isinstance(effect, Load):
                    self.members.set_load(effect.free)
            if not pending:
                break
            fx = self.machine.step(self.clock(), pending.popleft())
        if failure is not None:
            raise failure
        return kills

    def _persist(self, effect: Persist) -> None:
        """Write the contracts of newly accepted jobs (one transaction)."""
        jobs = [self.jobs[k] for k in effect.jobs]  # type: ignore[index]
        try:
            with self.store.tx() as db:
                for job in jobs:
                    cstore.contract_put(
                        db,
                        job.monitor,
                        job.key.campaign_id,
                        job.key.activity,
                        job.key.attempt,
                        job.item.SerializeToString(),
                        st.AWARDED,
                    )
        except Exception:
            for job in jobs:
                del self.jobs[job.job_key]
            raise

    async def _kill(self, kills: list[Kill]) -> None:
        for kill in kills:
            plugin = self.registry.loaded.get(kill.plugin)
            if plugin is not None:
                _, key = kill.job
                await plugin.cancel(key.campaign_id, key.activity, key.attempt)

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Report attempts lost by a previous crash, then start the reporter."""
        lost = cstore.contracts_open(self.store)
        self.reporter.start()  # first whatever the outbox still holds
        self._step(
            Lost(tuple((monitor, TenderKey(cid, act, n)) for cid, act, n, monitor, _ in lost))
        )
        self.reporter.persist()  # closes the lost contracts before new work starts
        self._loadtask = asyncio.create_task(self._load_loop())

    async def close(self) -> None:
        """Cancel running work and stop (events stay in the outbox)."""
        _, kills = self._step(Close())
        await self._kill(kills)
        tasks = [*self._tasks.values(), self._loadtask]
        for t in tasks:
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        await self.reporter.close()

    # ------------------------------------------------------------ bidding
    def _self_info(self) -> AgentInfo | None:
        rec = self.members.record_of(self.name)
        return agent_from_record(rec, "alive") if rec is not None else None

    def bids(self, req: scheduling_pb2.CallForProposalsRequest) -> list[Bid]:
        """Answer a call for proposals: one bid or refusal per tender.

        Each tender is bid on as if it were the only one (the monitor corrects the
        bids of a burst with their ``marginal_s`` as it awards them).
        """
        me = self._self_info()
        m, now = self.machine, self.clock()
        queued, free, busy = m.queued, m.free_slots, m.busy_reason()
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
                    avg_runtime_s=m.runtime(act.plugin),
                    service_interval_s=m.service_interval(act.plugin, now),
                )
                gated = m.gated(act.plugin, now, queued, free)
                if gated and not answer.refused:
                    answer = answers[profile] = Bid.busy_refusal(key, gated)
            out.append(dataclasses.replace(answer, key=key))
        return out

    def _policy_refusal(
        self, monitor: str, t: scheduling_pb2.Tender, act: ActivityDef
    ) -> str | None:
        """Why this agent's execution policy refuses the tender, or None."""
        policy = self.policy
        if not policy.rules:
            return None
        if t.owner and not t.owner.startswith("spiffe://"):
            raise InvalidInput(f"tender owner {t.owner[:80]!r} is not a SPIFFE ID")
        owner = wire_owner(self.mesh, monitor, t.owner)
        function = act.is_function or t.function_bytes > 0
        return policy.refusal(owner, act.plugin, function=function)

    def expected_runtime(self, plugin: str) -> float:
        """The measured run time of ``plugin``'s activities here (0 when unknown)."""
        return self.machine.expected_runtime(plugin, self.clock())

    # ------------------------------------------------------------ awards
    def award(self, req: scheduling_pb2.AwardRequest) -> list[scheduling_pb2.AwardDecision]:
        """Accept (and queue) or reject each awarded activity.

        An accepted attempt's contract is written before this returns.
        """
        monitor, m = req.monitor, self.machine
        items: list[AwardItem] = []
        parsed: dict[TenderKey, tuple[ActivityDef, scheduling_pb2.AwardItem]] = {}
        for item in req.items:
            key = key_of(item.tender)
            jkey = (monitor, key)
            settled = (
                m.job(jkey) is not None
                or m.succeeded(jkey)
                or (item.monitor and item.monitor != monitor)
                or m.full()
                or m.closing
            )
            if settled:  # the machine answers without looking at the activity
                items.append(AwardItem(key, named_monitor=item.monitor))
                continue
            try:
                act = activity_from_spec(item.tender.spec)
                refused = self._policy_refusal(monitor, item.tender, act)
            except InvalidInput as exc:
                items.append(AwardItem(key, named_monitor=item.monitor, refusal=str(exc)))
                continue
            parsed.setdefault(key, (act, item))
            label = act.plugin or act.kind
            items.append(AwardItem(key, act.plugin, label, item.monitor, refused))
        fx = m.step(self.clock(), Awarded(monitor, tuple(items)))
        now = self.clock()
        for effect in fx.of(Persist):
            for new in effect.jobs:
                act, item = parsed[new[1]]  # type: ignore[index]
                job = Job(new[1], monitor, act, item, started=now)  # type: ignore[arg-type]
                job.record = m.job(new)
                self.jobs[job.job_key] = job
        self._carry_out(fx)
        return [
            scheduling_pb2.AwardDecision(
                campaign_id=d.key.campaign_id,
                activity=d.key.activity,
                attempt=d.key.attempt,
                accepted=d.accepted,
                reason=d.reason,
            )
            for d in fx.decisions
        ]

    # ------------------------------------------------------------ running
    async def _execute(self, job: Job) -> None:
        """Run a started job and tell the machine how it ended."""
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
            self._tasks.pop(job.job_key, None)
        detail = dict(outcome.detail)
        if outcome.exit_code is not None:
            detail["exit_code"] = str(outcome.exit_code)
        if outcome.stderr_tail:
            detail["stderr_tail"] = outcome.stderr_tail
        if outcome.stdout_tail:
            detail["stdout_tail"] = outcome.stdout_tail
        context = {}
        if job.inputs:
            context["inputs"] = json.dumps(job.inputs, separators=(",", ":"))
        self._step(
            Finished(
                job.job_key,
                outcome.state,
                outcome.message,
                detail,
                context,
                outcome.result,
                job.elapsed,
            )
        )

    async def _run(self, job: Job) -> Outcome:
        spec = job.item.tender.spec
        prepared = await self.stager.prepare(job, self._emitter(job))
        if job.act.kind == "transfer":
            outcome = await self.stager.transfer(job, prepared, self._emitter(job))
            await self._digest_outputs(Path(outcome.detail["path"]), outcome)
            return outcome
        plugin = self.registry.for_kind(job.act.kind, job.act.plugin)
        job.plugin_name = plugin.name
        _, kills = self._step(Started(job.job_key, plugin.name))
        if kills:  # stopped while it staged: its plugin never runs
            return Outcome("CANCELLED", message="cancelled")
        req = RunRequest(
            campaign_id=job.key.campaign_id,
            activity=job.key.activity,
            attempt=job.key.attempt,
            kind=job.act.kind,
            spec=prepared.spec if prepared.spec is not None else spec,
            working_dir=prepared.working_dir,
            output_dir=prepared.output_dir,
            agent_dir=self.data_dir,
            env=prepared.env,
            timeout_s=job.act.timeout_s or None,
            sandbox=self._jail(job, prepared),
        )
        started = self.clock()
        outcome = await plugin.run(req, RunContext(emit=self._emitter(job)))
        job.elapsed = self.clock() - started
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
        sandbox = self.sandbox
        if sandbox is None:
            return None
        spec = job.item.tender.spec
        rw = [prepared.working_dir, prepared.output_dir]
        ro = list(prepared.inputs)
        script = prepared.env.get("ZMESH_SCRIPT")
        if script:
            ro.append(Path(script))
        owner_scope, campaign_scope = run_scopes(self.mesh, job)
        if spec.WhichOneof("body") != "python" or not spec.python.function:
            return sandbox.for_run(campaign_scope, rw, ro)
        mode = self.sandbox_functions
        scope = {"owner": owner_scope, "shared": ""}.get(mode, campaign_scope)
        shared_dir = self.data_dir / "runs" / scope
        shared_dir.mkdir(parents=True, exist_ok=True)  # a custom working dir elsewhere
        rw.append(shared_dir)
        # Per owner (or shared), the next campaign comes to the same workers: keep
        # one started ahead, so a call that finds the warm one busy need not wait.
        return sandbox.for_run(scope, rw, ro, spare=mode != "campaign")

    async def _digest_outputs(self, path: Path, outcome: Outcome) -> None:
        """Add the size and sha256 of what a successful attempt produced to its detail."""
        if outcome.state != "SUCCEEDED":
            return
        outcome.detail.update(await asyncio.to_thread(output_detail, self.catalog, path))

    def _emitter(self, job: Job):  # type: ignore[no-untyped-def]
        async def emit(state: str, message: str = "", detail: dict[str, str] | None = None) -> None:
            self._step(Progress(job.job_key, state, message, detail or {}))

        return emit

    def _emit(self, effect: Emit) -> None:
        monitor, key = effect.job
        ev = event(
            key.campaign_id,
            key.activity,
            effect.state,
            attempt=key.attempt,
            agent=self.name,
            message=effect.message,
            detail=dict(effect.detail),
            result=effect.result,
        )
        self.reporter.emit(monitor, ev, final=effect.final)
        if effect.final:
            self.jobs.pop(effect.job, None)  # type: ignore[arg-type]

    # ------------------------------------------------------------ cancel
    async def cancel(self, refs: list[scheduling_pb2.ActivityRef], monitor: str) -> int:
        """Stop matching attempts of ``monitor``'s jobs (attempt 0 = any attempt).

        Jobs of other monitors are never touched, whatever the refs name."""
        wanted = tuple((r.campaign_id, r.activity, r.attempt) for r in refs)
        fx, kills = self._step(CancelRequested(monitor, wanted))
        await self._kill(kills)
        return fx.matched

    async def hand_back(self, key: JobKey, reason: str) -> bool:
        """Give an accepted attempt back to its monitor (stopping it if it runs).

        The monitor offers it again without counting a failure (a pilot does this
        before its walltime). False when there is no such attempt here any more.
        """
        fx, kills = self._step(HandBack(key, reason))
        await self._kill(kills)
        return fx.matched == 1

    def mark_handed_back(self, reason: str) -> None:
        """Mark every accepted attempt as handed back (they report so however they end);
        :meth:`hand_back` then stops them."""
        self._step(MarkHandedBack(reason))

    # ------------------------------------------------------------ load
    async def _load_loop(self) -> None:
        """Gossip free slots when they change (at most once per interval)."""
        while True:
            await asyncio.sleep(LOAD_GOSSIP_INTERVAL_S)
            self._step(Tick())
