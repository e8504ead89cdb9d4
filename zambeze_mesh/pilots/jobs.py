"""Submitting, listing and cancelling pilot jobs through PSI/J (the submitting side).

A pilot lives in ``<home>/pilots/<name>/``: ``spec.json`` (what the job reads),
``token`` (mode 0600, read and deleted by the pilot), ``state.json`` (written by the
pilot: started, joined, draining, left) and ``drain`` (created by ``zmesh pilot
cancel`` to ask the pilot to drain and leave). The agent's store keeps one row per
pilot in ``pilots``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import FailedPrecondition, InvalidInput, NotFound, Unavailable
from zambeze_mesh.pilots.grant import MAX_TTL_S, prefix_for
from zambeze_mesh.pilots.grant import obtain as obtain_pilot_token
from zambeze_mesh.pilots.spec import PilotSpec, build_pilot_job, pilot_name
from zambeze_mesh.settings.checks import parse_walltime
from zambeze_mesh.settings.config import AgentConfig, split_hostport
from zambeze_mesh.settings.home import Home
from zambeze_mesh.store.db import Store

#: A pilot token is valid this long after submission (the job may queue).
TOKEN_TTL_S = MAX_TTL_S
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pilots (
    name TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    scheduler TEXT NOT NULL,
    dir TEXT NOT NULL,
    submitted_ms INTEGER NOT NULL,
    walltime_s REAL NOT NULL,
    slots INTEGER NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'submitted'
)
"""
_EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS pilot_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    pilot TEXT NOT NULL,
    message TEXT NOT NULL
)
"""
#: Pilot events kept (older ones are dropped).
MAX_EVENTS = 1000
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class PilotRow:
    """One submitted pilot as the submitting agent records it."""

    name: str
    job_id: str
    scheduler: str
    dir: Path
    submitted_ms: int
    walltime_s: float
    slots: int
    labels: dict[str, str] = field(default_factory=dict)
    state: str = "submitted"

    def pilot_state(self) -> dict[str, Any]:
        """What the pilot last wrote to its ``state.json`` ({} before it started)."""
        try:
            data: dict[str, Any] = json.loads((self.dir / "state.json").read_text())
            return data
        except (OSError, ValueError):
            return {}


def _ensure(store: Store) -> None:
    with store.tx() as db:
        db.execute(_SCHEMA)


def list_rows(store: Store) -> list[PilotRow]:
    """Every pilot this agent submitted, oldest first."""
    _ensure(store)
    rows = store.read("SELECT * FROM pilots ORDER BY submitted_ms, name")
    return [
        PilotRow(
            r["name"],
            r["job_id"],
            r["scheduler"],
            Path(r["dir"]),
            r["submitted_ms"],
            r["walltime_s"],
            r["slots"],
            json.loads(r["labels"]),
            r["state"],
        )
        for r in rows
    ]


def get_row(store: Store, name: str) -> PilotRow:
    """The pilot called ``name`` (or with that job id); NotFound otherwise."""
    for row in list_rows(store):
        if name in (row.name, row.job_id):
            return row
    raise NotFound(f"no pilot {name!r} was submitted by this agent")


def set_state(store: Store, name: str, state: str) -> None:
    """Record the submitting side's view of a pilot (submitted, cancelling, cancelled)."""
    with store.tx() as db:
        db.execute("UPDATE pilots SET state = ? WHERE name = ?", (state, name))


def executor_for(cfg: AgentConfig, poll_s: int = 1) -> Any:
    """The PSI/J executor of the agent's scheduler."""
    from psij import JobExecutor

    from zambeze_mesh.execution.batch import _executor_config

    if not cfg.scheduler:
        raise FailedPrecondition(
            "pilots need a batch scheduler: set scheduler (and queue, account) in config.toml"
        )
    return JobExecutor.get_instance(
        cfg.scheduler, config=_executor_config(cfg.scheduler, None, poll_s)
    )


def _addresses(home: Home) -> tuple[str, str]:
    if home.running_pid() is None or not home.ports.exists():
        raise Unavailable(f"no agent is running on {home.root}: pilots join through it")
    parts = home.ports.read_text().split()
    if len(parts) < 2:
        raise Unavailable("the running agent has not written its addresses yet")
    return parts[0], parts[1]


def submit_pilot(
    home: Home,
    store: Store,
    *,
    nodes: int = 1,
    walltime: str = "",
    slots: int = 0,
    labels: dict[str, str] | None = None,
    idle_timeout_s: float = 0.0,
    pilot_outputs: str = "return",
    python: str = sys.executable,
) -> PilotRow:
    """Submit one pilot job through PSI/J; return its row once the scheduler took it."""
    if pilot_outputs not in ("return", "keep"):
        raise InvalidInput("pilot_outputs must be 'return' or 'keep'")
    cfg = AgentConfig.load(home.config)
    executor = executor_for(cfg)
    wall = parse_walltime(walltime or cfg.walltime or "30")
    assert wall is not None
    if not 0 <= slots <= 4096:
        raise InvalidInput("slots must be between 0 (one per CPU) and 4096")
    seed, admission = _addresses(home)
    host, _ = split_hostport(seed)
    # On a CA holder the token is made here; elsewhere a CA holder grants it.
    token = obtain_pilot_token(
        store, prefix_for(cfg.name), TOKEN_TTL_S, f"{cfg.scheduler} pilot of {cfg.name}"
    )
    pdir = home.root / "pilots" / f"new-{secrets.token_hex(4)}"
    pdir.mkdir(parents=True, mode=0o700)
    os.chmod(pdir, 0o700)
    spec = PilotSpec(
        agent=cfg.name,
        seed=seed,
        seed_admission=admission,
        scheduler=cfg.scheduler,
        walltime_s=wall.total_seconds(),
        slots=slots,
        host=host if host in _LOOPBACK else "",
        labels=dict(labels or {}),
        membership=cfg.membership,
        idle_timeout_s=idle_timeout_s,
        pilot_outputs=pilot_outputs,
    )
    if pilot_outputs == "return":
        # Under the submitter's data dir: what the pilot produces stays served (by
        # the submitter) after the pilot has left. Needs a file system both see.
        spec.data_dir = str((home.root / cfg.data_dir / "pilots" / pdir.name).absolute())
    spec.save(pdir / "spec.json")
    fd = os.open(pdir / "token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    job = build_pilot_job(
        pdir / "spec.json",
        nodes=nodes,
        walltime=wall,
        queue=cfg.queue,
        account=cfg.account,
        python=python,
        name=f"zmesh-pilot-{cfg.name}"[:64],
    )
    from psij import SubmitException

    try:
        executor.submit(job)
    except SubmitException as exc:
        shutil.rmtree(pdir, ignore_errors=True)
        raise Unavailable(f"{cfg.scheduler} refused the pilot job: {exc}") from None
    job_id = str(job.native_id)
    name = pilot_name(cfg.name, job_id)
    final = pdir.with_name(name)
    # The job reads its spec by path: link the final name to the submitted directory.
    os.symlink(pdir.name, final)
    row = PilotRow(
        name,
        job_id,
        cfg.scheduler,
        final,
        int(time.time() * 1000),
        wall.total_seconds(),
        slots,
        dict(labels or {}),
    )
    _ensure(store)
    with store.tx() as db:
        db.execute(
            "INSERT INTO pilots (name, job_id, scheduler, dir, submitted_ms, walltime_s,"
            " slots, labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.name,
                row.job_id,
                row.scheduler,
                str(row.dir),
                row.submitted_ms,
                row.walltime_s,
                row.slots,
                json.dumps(row.labels),
            ),
        )
    record_event(store, "submitted", f"{cfg.scheduler} job {job_id}", row.name)
    return row


def scheduler_states(cfg: AgentConfig, job_ids: list[str]) -> dict[str, str]:
    """The scheduler's state of each job (``QUEUED``, ``ACTIVE``, ``COMPLETED``...);
    jobs the scheduler no longer lists are missing from the answer."""
    if not job_ids:
        return {}
    executor = executor_for(cfg)
    try:
        out = executor._run_command(executor.get_status_command(job_ids))
        statuses = executor.parse_status_output(0, out)
    except Exception:  # the state shows as unknown
        return {}
    return {jid: str(statuses[jid].state) for jid in job_ids if jid in statuses}


def cancel_job(cfg: AgentConfig, job_id: str) -> None:
    """Ask the scheduler to cancel ``job_id`` (a job that already ended is fine)."""
    executor = executor_for(cfg)
    try:
        executor._run_command(executor.get_cancel_command(job_id))
    except subprocess.CalledProcessError:
        pass  # already gone


def request_drain(row: PilotRow) -> None:
    """Ask a pilot to stop taking work, finish or hand back what it runs, and leave."""
    (row.dir / "drain").write_text(str(time.time()))


def time_left_s(row: PilotRow, now: float | None = None) -> float | None:
    """Seconds until the pilot's walltime, once it has started (None before)."""
    started = row.pilot_state().get("started")
    if not isinstance(started, int | float):
        return None
    now = time.time() if now is None else now
    return max(0.0, started + row.walltime_s - now)


@dataclass(frozen=True)
class PilotEvent:
    """One pilot decision or life-cycle step (``scale``, ``submitted``, ``cancel``...)."""

    seq: int
    time_ms: int
    kind: str
    pilot: str
    message: str


def record_event(store: Store, kind: str, message: str, pilot: str = "") -> None:
    """Append a pilot event (the autoscaler's decisions, submissions, cancels)."""
    with store.tx() as db:
        db.execute(_EVENTS_SCHEMA)
        db.execute(
            "INSERT INTO pilot_events (time_ms, kind, pilot, message) VALUES (?, ?, ?, ?)",
            (int(time.time() * 1000), kind, pilot, message),
        )
        db.execute(
            "DELETE FROM pilot_events WHERE seq <= (SELECT MAX(seq) FROM pilot_events) - ?",
            (MAX_EVENTS,),
        )


def list_events(store: Store, limit: int = 100) -> list[PilotEvent]:
    """The latest ``limit`` pilot events, oldest first."""
    with store.tx() as db:
        db.execute(_EVENTS_SCHEMA)
    rows = store.read("SELECT * FROM pilot_events ORDER BY seq DESC LIMIT ?", (limit,))
    return [
        PilotEvent(r["seq"], r["time_ms"], r["kind"], r["pilot"], r["message"])
        for r in reversed(rows)
    ]
