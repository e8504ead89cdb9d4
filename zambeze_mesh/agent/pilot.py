"""The pilot agent inside an allocation: ``python -m zambeze_mesh.agent.pilot SPEC``.

It reads its spec and its single-use token (then deletes the token file), joins the
mesh through the submitting agent as ``<agent>-pilot-<jobid>`` with the labels
``pilot``, ``scheduler``, ``allocation`` (plus the user's), serves activities, and
follows the drain policy of :mod:`.drain` once a second: it refuses what would not
finish before the walltime, hands back what will not, and leaves (``LEFT``) when its
time is up, when asked to drain (the ``drain`` file) and done, or when idle longer
than ``idle_timeout``. SIGTERM (the scheduler cancelling the job) hands everything
back and leaves at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from zambeze_mesh.pilots import drain
from zambeze_mesh.pilots.spec import PilotSpec, job_id_from_env, pilot_name
from zambeze_mesh.settings.home import Home
from zambeze_mesh.settings.logs import log_event

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent
    from zambeze_mesh.agent.contractor import JobKey

log = logging.getLogger("zambeze_mesh.pilot")

TICK_S = 1.0


def write_state(pdir: Path, **fields: object) -> None:
    """Merge ``fields`` into the pilot's ``state.json`` (read by ``zmesh pilot ls``)."""
    path = pdir / "state.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


class PilotController:
    """Applies the drain policy to a running pilot agent (one tick per second)."""

    def __init__(self, agent: Agent, spec: PilotSpec, pdir: Path, started: float) -> None:
        self.agent = agent
        self.spec = spec
        self.pdir = pdir
        self.end = started + spec.walltime_s
        self.draining = False
        self.stop = asyncio.Event()
        self.reason = ""
        self._idle_since = time.monotonic()
        contractor = agent.contractor
        assert contractor is not None
        contractor.gate = self._gate

    def time_left(self) -> float:
        """Seconds until the walltime."""
        return self.end - time.time()

    def _gate(self, runtime_s: float, queued: int, free: int, slots: int) -> str | None:
        return drain.may_take(
            self.time_left(),
            runtime_s,
            queue_len=queued,
            free_slots=free,
            slots=slots,
            margin_s=self.spec.margin_s,
            draining=self.draining,
        )

    def start_draining(self, why: str) -> None:
        """Stop taking work from now on."""
        if not self.draining:
            self.draining = True
            log_event(log, "pilot.draining", reason=why, time_left=round(self.time_left(), 1))
            write_state(self.pdir, mesh="draining")

    async def tick(self) -> str | None:
        """One step of the policy; returns why to leave, or None."""
        contractor = self.agent.contractor
        assert contractor is not None
        if not self.draining and (self.pdir / "drain").exists():
            self.start_draining("requested")
        left = self.time_left()
        now = time.monotonic()
        running = [
            drain.Running(
                key, now - job.started, contractor.expected_runtime(job.act.plugin) or 0.0
            )
            for key, job in list(contractor.jobs.items())
            if job.running and not job.handed_back
        ]
        back = drain.hand_back(left, running, margin_s=self.spec.margin_s)
        queued = [k for k, j in contractor.jobs.items() if not j.running and not j.handed_back]
        if self.draining:
            back += queued  # accepted work that has not started will not start here
        else:
            back += drain.queued_to_hand_back(
                left,
                list(queued),
                runtime_s=max((r.expected_s for r in running), default=0.0),
                slots=contractor.slots,
                margin_s=self.spec.margin_s,
            )
        for key in back:
            # drain works on opaque keys; these are the contractor's own job keys
            await contractor.hand_back(cast("JobKey", key), f"pilot ends in {max(0.0, left):.0f}s")
        busy = bool(contractor.jobs)
        if busy:
            self._idle_since = now
        runtimes = [contractor.expected_runtime(p) for p in ("shell", "python")]
        return drain.leave_reason(
            left,
            busy=busy,
            idle_s=now - self._idle_since,
            runtime_s=min((r for r in runtimes if r > 0), default=0.0),
            idle_timeout_s=self.spec.idle_timeout_s,
            draining=self.draining,
            margin_s=self.spec.margin_s,
        )

    async def run(self) -> str:
        """Tick until the pilot should leave; returns the reason."""
        while True:
            reason = await self.tick()
            if reason is not None:
                return reason
            if self.stop.is_set():
                self.start_draining("terminated")
                return "terminated"
            try:
                await asyncio.wait_for(self.stop.wait(), TICK_S)
            except TimeoutError:
                pass


async def _hand_back_all(agent: Agent, why: str) -> None:
    contractor = agent.contractor
    if contractor is None:
        return
    for key in list(contractor.jobs):
        await contractor.hand_back(key, why)
    # Let the reporter deliver the hand-backs before the agent goes.
    for _ in range(50):
        if not contractor.jobs and not contractor.reporter.unacknowledged():
            break
        await asyncio.sleep(0.1)


async def run_pilot(spec_path: Path, started: float | None = None) -> str:
    """Join, serve and leave; returns why the pilot left."""
    from zambeze_mesh.agent.agent import Agent
    from zambeze_mesh.agent.join import join_mesh
    from zambeze_mesh.agent.settle import settle_tasks

    started = time.time() if started is None else started
    spec = PilotSpec.load(spec_path)
    pdir = spec_path.parent
    job_id = job_id_from_env(spec.scheduler)
    name = pilot_name(spec.agent, job_id)
    write_state(pdir, started=started, job_id=job_id, name=name, mesh="joining")
    token_file = pdir / "token"
    token = token_file.read_text().strip()
    token_file.unlink()
    host = spec.host or socket.getfqdn()
    labels = {
        **spec.labels,
        "pilot": name,
        "scheduler": spec.scheduler,
        "allocation": job_id,
        "pilot_outputs": spec.pilot_outputs,
    }
    returned = spec.pilot_outputs == "return" and spec.data_dir
    data_dir = spec.data_dir if returned else "data"
    home = Home(pdir / f"home-{job_id}")
    slots = spec.slots or max(1, len(os.sched_getaffinity(0)))
    await join_mesh(
        home,
        spec.seed,
        token,
        name=name,
        listen=f"{host}:0" if ":" not in host else f"[{host}]:0",
        seed_admission=spec.seed_admission,
        labels=labels,
        slots=slots,
        membership=spec.membership,
        zeroconf=False,
        data_dir=data_dir,
    )
    agent = Agent(home)
    await agent.start()
    ctl = PilotController(agent, spec, pdir, started)
    loop = asyncio.get_running_loop()

    def terminated() -> None:
        # The scheduler is ending the job (scancel): whatever the activities' own
        # processes report once the signal reaches them, their attempts go back.
        assert agent.contractor is not None
        agent.contractor.mark_handed_back("the pilot's job was cancelled")
        ctl.stop.set()

    loop.add_signal_handler(signal.SIGTERM, terminated)
    loop.add_signal_handler(signal.SIGINT, terminated)
    write_state(pdir, mesh="alive", address=agent.address)
    log_event(log, "pilot.joined", name=name, job_id=job_id, slots=slots)
    reason = "error"
    try:
        reason = await ctl.run()
        ctl.start_draining(reason)
        await _hand_back_all(agent, f"pilot leaving ({reason})")
        await agent.leave()
    finally:
        write_state(pdir, mesh="left", left=time.time(), reason=reason)
        log_event(log, "pilot.left", name=name, reason=reason)
        await agent.shutdown()
        await settle_tasks()  # the job's output gets no CancelledError tracebacks from grpc
    return reason


def main(argv: list[str] | None = None) -> int:
    """Entry point of the pilot job."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m zambeze_mesh.agent.pilot SPEC.json", file=sys.stderr)
        return 2
    started = time.time()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    reason = asyncio.run(run_pilot(Path(args[0]).absolute(), started))
    print(f"pilot left: {reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
