"""The contractor's side of the contract net as a pure state machine.

:class:`ContractorMachine` owns the contractor's jobs: its slots and queue, the
jobs keyed ``(monitor, (campaign, activity, attempt))``, the rule that two attempts
of one activity never run at the same time here (a plugin's (campaign, activity,
attempt) key names exactly one run, and an activity's attempts share its default
working dir), held and released jobs, cancels, hand-backs (pilots), and the events
to monitors. :meth:`ContractorMachine.step` takes the time and one typed input
(:mod:`.jobs`) and returns the effects the async shell
(:class:`zambeze_mesh.agent.contractor.Contractor`) carries out: persist contracts,
start and kill runs, emit events through the outbox.

Commit, then apply: an award's jobs are ``ACCEPTED`` until the shell has written
their contracts (:class:`~.jobs.Persisted`); only then may they run.

It also learns the run time of each plugin and the interval between completions
while saturated (the real cost of one more queued activity here), which the
contractor's bids use.

No asyncio, grpc, sqlite3 or networkx here.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from zambeze_mesh.control.jobs import (
    ALLOWED,
    CANCELLED,
    FAILED,
    FINAL_STATES,
    HOLDS_SLOT,
    SUCCEEDED,
    Awarded,
    AwardItem,
    CancelRequested,
    Close,
    ContractorConfig,
    Decision,
    Effects,
    Emit,
    Finished,
    Gate,
    HandBack,
    IllegalJobTransition,
    Input,
    JobKey,
    JobState,
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

log = logging.getLogger("zambeze_mesh.contractor")

__all__ = ["ContractorMachine", "JobRecord"]

#: A sample slower than this many times the plugin's usual run time (a worker being
#: started, a one-off) is not a service interval.
_OUTLIER = 10.0


def _activity_of(key: JobKey) -> tuple[str, str]:
    return (key[1].campaign_id, key[1].activity)


@dataclass
class JobRecord:
    """One accepted attempt as the machine sees it (read-only outside the machine)."""

    key: JobKey
    plugin: str
    label: str
    state: JobState = JobState.ACCEPTED
    #: Why it is given back to its monitor ('' = it is not).
    handed_back: str = ""
    #: The plugin that runs it, once :class:`~.jobs.Started`.
    runner: str = ""

    @property
    def running(self) -> bool:
        """Whether it holds a slot."""
        return self.state in HOLDS_SLOT

    @property
    def stopping(self) -> bool:
        """Whether it was told to stop (cancelled or handed back while running)."""
        return self.state is JobState.STOPPING


class ContractorMachine:
    """Slots, queue, attempts, cancels and hand-backs of one contractor."""

    def __init__(self, config: ContractorConfig, gate: Gate | None = None) -> None:
        self.config = config
        #: Optional admission gate (a pilot's drain policy).
        self.gate = gate
        self.jobs: dict[JobKey, JobRecord] = {}
        self._queue: deque[JobKey] = deque()
        self._held: dict[tuple[str, str], list[JobKey]] = {}
        self._busy: dict[tuple[str, str], JobKey] = {}  # activity -> its running job
        # Attempts that succeeded here: a duplicate award never runs them again. (A
        # cancelled attempt may be awarded again by a new negotiation of its key.)
        self._succeeded: OrderedDict[JobKey, None] = OrderedDict()
        self._closing = False
        self._now = 0.0
        self._fx = Effects()
        # Learned run time per plugin (EWMA). Unknown = 0: a contractor without history
        # bids low, gets work and learns (exploration) instead of being starved.
        self._runtime: dict[str, float] = {}
        # Measured time between completions while saturated (EWMA per plugin, when).
        self._service: dict[str, tuple[float, float]] = {}
        self._last_done: float | None = None
        self.illegal = 0  # refused illegal moves (production mode)

    # ------------------------------------------------------------ queries
    @property
    def slots(self) -> int:
        """Jobs that may run at once."""
        return self.config.slots

    @property
    def running(self) -> int:
        """Jobs holding a slot."""
        return len(self._busy)

    @property
    def queued(self) -> int:
        """Jobs waiting for a slot (not those held behind another attempt)."""
        return len(self._queue)

    @property
    def free_slots(self) -> int:
        """Slots not held by a job."""
        return max(0, self.slots - self.running)

    @property
    def closing(self) -> bool:
        """Whether the contractor is shutting down."""
        return self._closing

    def full(self) -> bool:
        """Whether it holds as many jobs as it may."""
        return len(self.jobs) >= self.config.limit

    def busy_reason(self) -> str:
        """Why no new work is taken now ('' = it is)."""
        if self._closing:
            return "shutting down"
        return "queue is full" if self.full() else ""

    def job(self, key: JobKey) -> JobRecord | None:
        """The live job of ``key``, if any."""
        return self.jobs.get(key)

    def succeeded(self, key: JobKey) -> bool:
        """Whether ``key`` succeeded here (the last ``remember_succeeded`` are kept)."""
        return key in self._succeeded

    def runtime(self, plugin: str) -> float:
        """The learned run time of ``plugin``'s activities (0 when unknown)."""
        return self._runtime.get(plugin, 0.0)

    def service_interval(self, plugin: str, now: float) -> float:
        """The learned service interval, if learned in the last ``service_memory_s``."""
        learned = self._service.get(plugin)
        if learned is None or now - learned[1] > self.config.service_memory_s:
            return 0.0
        return learned[0]

    def expected_runtime(self, plugin: str, now: float) -> float:
        """The measured run time of ``plugin``'s activities here (0 when unknown)."""
        return max(self.runtime(plugin), self.service_interval(plugin, now))

    def gated(self, plugin: str, now: float, queued: int, free: int) -> str | None:
        """Why the admission gate refuses work of ``plugin`` now, or None."""
        if self.gate is None:
            return None
        return self.gate(self.expected_runtime(plugin, now), queued, free, self.slots)

    # ------------------------------------------------------------ step
    def step(self, now: float, inp: Input) -> Effects:
        """Advance to ``now`` and process one input; return what the shell must do."""
        self._now = now
        fx = self._fx = Effects()
        if isinstance(inp, Awarded):
            self._awarded(inp)
        elif isinstance(inp, Persisted):
            for key in inp.jobs:
                job = self.jobs.get(key)
                if job is not None and self._move(job, JobState.QUEUED):
                    self._queue.append(key)
        elif isinstance(inp, PersistFailed):
            for key in inp.jobs:
                job = self.jobs.get(key)
                if job is not None and self._move(job, JobState.DONE):
                    del self.jobs[key]  # never durable: forgotten, no event
        elif isinstance(inp, Started):
            self._started(inp)
        elif isinstance(inp, Progress):
            self._progress(inp)
        elif isinstance(inp, Finished):
            self._finished(inp)
        elif isinstance(inp, CancelRequested):
            self._cancel(inp)
        elif isinstance(inp, HandBack):
            self._hand_back(inp)
        elif isinstance(inp, MarkHandedBack):
            for job in self.jobs.values():
                job.handed_back = job.handed_back or inp.reason
        elif isinstance(inp, Lost):
            for key in inp.jobs:
                if key not in self.jobs:
                    msg = "the contractor restarted and lost this attempt"
                    fx.effects.append(Emit(key, FAILED, msg, final=True))
        elif isinstance(inp, Close):
            self._closing = True
            for job in list(self.jobs.values()):
                if job.running:
                    self._stop(job)
        elif isinstance(inp, Tick):
            fx.effects.append(Load(max(0, self.free_slots - self.queued)))
        else:  # pragma: no cover - the Input union is closed
            raise TypeError(f"unknown input {inp!r}")
        self._dispatch()
        self._fx = Effects()
        return fx

    # ------------------------------------------------------------ transitions
    def _move(self, job: JobRecord, new: JobState) -> bool:
        """Move ``job`` to ``new`` if the table allows it; else raise (strict) or refuse."""
        if new not in ALLOWED[job.state]:
            msg = f"illegal job transition {job.state} -> {new} for {job.key!r}"
            if self.config.strict:
                raise IllegalJobTransition(msg)
            self.illegal += 1
            log.error("%s: refused", msg)
            return False
        job.state = new
        return True

    def _awarded(self, inp: Awarded) -> None:
        new: list[JobKey] = []
        for item in inp.items:
            key: JobKey = (inp.monitor, item.key)
            reason = self._refusal(key, inp.monitor, item, len(new))
            if reason is None and key not in self.jobs and key not in self._succeeded:
                self.jobs[key] = JobRecord(key, item.plugin, item.label)
                new.append(key)
            self._fx.decisions.append(Decision(item.key, reason is None, reason or ""))
        if new:
            self._fx.effects.append(Persist(tuple(new)))

    def _refusal(self, key: JobKey, monitor: str, item: AwardItem, batch: int) -> str | None:
        job = self.jobs.get(key)
        if job is not None:
            return "this attempt is being cancelled here" if job.stopping else None
        if key in self._succeeded:
            return None  # a duplicate award: it already ran here, it never runs again
        if item.named_monitor and item.named_monitor != monitor:
            return f"award item names monitor {item.named_monitor!r}, the award {monitor!r}"
        if self.full() or self._closing:
            return "slots gone: queue is full"
        if item.refusal is not None:
            return item.refusal
        free = max(0, self.free_slots - batch)
        return self.gated(item.plugin, self._now, self.queued + batch, free)

    def _dispatch(self) -> None:
        """Start queued jobs while slots are free; hold those whose activity runs."""
        while self._queue and self.running < self.slots:
            key = self._queue.popleft()
            job = self.jobs[key]
            act = _activity_of(key)
            if act in self._busy:
                if self._move(job, JobState.HELD):
                    self._held.setdefault(act, []).append(key)
                continue
            if self._move(job, JobState.RUNNING):
                self._busy[act] = key
                self._fx.effects.append(Start(key))

    def _started(self, inp: Started) -> None:
        job = self.jobs.get(inp.job)
        if job is None or not job.running:
            self._illegal_input(inp, job)
            return
        job.runner = inp.plugin
        if job.stopping:  # told to stop before its plugin ran
            self._fx.effects.append(Kill(job.key, job.runner))

    def _progress(self, inp: Progress) -> None:
        job = self.jobs.get(inp.job)
        if inp.state in FINAL_STATES:
            self._illegal_input(inp, job)
            return
        if job is None or job.state is not JobState.RUNNING:
            return  # a stopped (or ended) job's chatter is not reported
        self._fx.effects.append(Emit(job.key, inp.state, inp.message, dict(inp.detail)))

    def _finished(self, inp: Finished) -> None:
        job = self.jobs.get(inp.job)
        if job is None or not job.running or inp.state not in FINAL_STATES:
            self._illegal_input(inp, job)
            return
        stopped = job.stopping or bool(job.handed_back)
        state, message, detail, result = inp.state, inp.message, dict(inp.detail), inp.result
        if stopped:
            state, message, detail = self._stopped_outcome(job, "cancelled")
            result = b""
        detail.update(inp.context)
        detail.setdefault("plugin", job.runner or job.label)
        if not self._end(job, Emit(job.key, state, message, detail, result, final=True)):
            return
        self._learn(job, inp.elapsed)

    def _end(self, job: JobRecord, final: Emit) -> bool:
        """``job`` is done: emit its final event, free its slot, release held jobs."""
        was = job.state
        if not self._move(job, JobState.DONE):
            return False
        self._fx.effects.append(final)
        del self.jobs[job.key]
        act = _activity_of(job.key)
        if was is JobState.QUEUED:
            self._queue.remove(job.key)
        elif was is JobState.HELD:
            held = self._held[act]
            held.remove(job.key)
            if not held:
                del self._held[act]
        elif was in HOLDS_SLOT:
            del self._busy[act]
            for key in self._held.pop(act, []):  # they wait for a slot again
                if self._move(self.jobs[key], JobState.QUEUED):
                    self._queue.append(key)
        if final.state == SUCCEEDED:
            self._remember(job.key)
        return True

    def _remember(self, key: JobKey) -> None:
        self._succeeded[key] = None
        while len(self._succeeded) > self.config.remember_succeeded:
            self._succeeded.popitem(last=False)

    # ------------------------------------------------------------ cancel
    def _cancel(self, inp: CancelRequested) -> None:
        for cid, activity, attempt in inp.refs:
            for key, job in list(self.jobs.items()):
                mon, akey = key
                if mon != inp.monitor or akey.campaign_id != cid or akey.activity != activity:
                    continue
                if attempt and akey.attempt != attempt:
                    continue
                if job.state is JobState.ACCEPTED:
                    continue  # the award call has not answered yet: nothing to stop
                self._stop(job)
                self._fx.matched += 1

    def _hand_back(self, inp: HandBack) -> None:
        job = self.jobs.get(inp.job)
        if job is None or job.stopping or job.state is JobState.ACCEPTED:
            return
        job.handed_back = job.handed_back or inp.reason or "handed back"
        _, akey = inp.job
        log.info(
            "handing back %s/%s attempt %d of %s: %s",
            akey.campaign_id,
            akey.activity,
            akey.attempt,
            inp.job[0],
            inp.reason,
        )
        self._stop(job)
        self._fx.matched = 1

    def _stop(self, job: JobRecord) -> None:
        """Stop ``job``: kill it if it runs, end it at once if it has not started."""
        if job.running:
            if job.state is JobState.RUNNING:
                self._move(job, JobState.STOPPING)
            if job.runner:  # else: killed when its plugin is about to run (Started)
                self._fx.effects.append(Kill(job.key, job.runner))
            return
        state, message, detail = self._stopped_outcome(job, "cancelled before it started")
        detail.setdefault("plugin", job.label)
        self._end(job, Emit(job.key, state, message, detail, final=True))

    @staticmethod
    def _stopped_outcome(job: JobRecord, message: str) -> tuple[str, str, dict[str, str]]:
        if job.handed_back:
            return FAILED, f"handed back: {job.handed_back}", {"handed_back": "1"}
        return CANCELLED, message, {}

    def _illegal_input(self, inp: Input, job: JobRecord | None) -> None:
        state = job.state if job is not None else "no such job"
        msg = f"{type(inp).__name__} for a job in state {state}: {inp!r}"
        if self.config.strict:
            raise IllegalJobTransition(msg)
        self.illegal += 1
        log.error("%s: refused", msg)

    # ------------------------------------------------------------ learning
    def _learn(self, job: JobRecord, elapsed: float | None) -> None:
        """Learn the plugin's run time, and the service interval from completions that
        follow each other while work was waiting (an idle gap says nothing about this
        agent's capacity). A job far slower than the plugin's usual run time is not a
        sample, so one outlier cannot price the agent out."""
        plugin, now = job.plugin, self._now
        usual = self._runtime.get(plugin, 0.0)
        if elapsed is not None:
            mean = self._runtime.get(plugin)
            self._runtime[plugin] = elapsed if mean is None else 0.8 * mean + 0.2 * elapsed
        saturated = bool(self._queue) or self.running >= self.slots
        if self._last_done is not None and (elapsed or 0.0) <= _OUTLIER * max(usual, 0.001):
            gap = now - self._last_done
            old = self._service.get(plugin)
            value = gap if old is None else 0.8 * old[0] + 0.2 * gap
            self._service[plugin] = (value, now)
        self._last_done = now if saturated else None

    # ------------------------------------------------------------ invariants
    def validate(self) -> None:
        """Check the machine's invariants; raise AssertionError naming the first broken."""
        by_state: dict[JobState, set[JobKey]] = {s: set() for s in JobState}
        for key, job in self.jobs.items():
            _check(job.key == key, f"job filed under {key!r} is {job.key!r}")
            _check(job.state is not JobState.DONE, f"a done job is live: {key!r}")
            _check(key not in self._succeeded, f"a live job already succeeded: {key!r}")
            by_state[job.state].add(key)
        _check(len(self._queue) == len(set(self._queue)), "a job is queued twice")
        _check(set(self._queue) == by_state[JobState.QUEUED], "queue != QUEUED jobs")
        held = [k for keys in self._held.values() for k in keys]
        _check(len(held) == len(set(held)), "a job is held twice")
        _check(set(held) == by_state[JobState.HELD], "held != HELD jobs")
        slot_holders = by_state[JobState.RUNNING] | by_state[JobState.STOPPING]
        _check(set(self._busy.values()) == slot_holders, "busy != jobs holding a slot")
        _check(len(self._busy) <= self.slots, f"{len(self._busy)} jobs run on {self.slots} slots")
        for act, key in self._busy.items():
            _check(_activity_of(key) == act, f"{key!r} runs under activity {act!r}")
        for act, keys in self._held.items():
            _check(bool(keys), f"empty hold list for {act!r}")
            _check(act in self._busy, f"{act!r} is held but nothing of it runs")
            for key in keys:
                _check(_activity_of(key) == act, f"{key!r} is held under {act!r}")
        _check(
            not self._queue or self.running >= self.slots,
            "a job waits in the queue while a slot is free",
        )
        _check(
            len(self._succeeded) <= self.config.remember_succeeded, "too many successes remembered"
        )

    def snapshot(self) -> Mapping[JobKey, JobState]:
        """Every live job's state (for tests and diagnostics)."""
        return {key: job.state for key, job in self.jobs.items()}

    def __iter__(self) -> Iterator[JobRecord]:
        return iter(list(self.jobs.values()))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(f"contractor invariant broken: {message}")
