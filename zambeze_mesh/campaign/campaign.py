"""``Campaign``: a named set of activities dispatched to the mesh and followed live.

Every blocking method (``dispatch``, ``poll``, ``wait``, ``cancel``, ``status``)
works in a plain script and inside a running event loop (Jupyter): the gRPC work
runs on the private bridge loop. Each has an ``*_async`` twin for async code, and
``events()`` is an async iterator of the campaign's events.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zambeze_mesh.campaign.activities import Activity
from zambeze_mesh.campaign.client import Client, default_client, is_final_wire
from zambeze_mesh.campaign.futures import ActivityFuture
from zambeze_mesh.campaign.loop import bridge
from zambeze_mesh.campaign.tracker import ActivityRow, CampaignSnapshot, Tracker
from zambeze_mesh.campaign.wire import (
    FINAL_ACTIVITY_STATES,
    ActivityStatus,
    CampaignStatus,
    Event,
)
from zambeze_mesh.errors import FailedPrecondition, InvalidInput, Unavailable, ZmeshError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Campaign"]


_DISPATCHED: list[Campaign] = []


def dispatched() -> list[Campaign]:
    """Campaigns dispatched by this process so far (``zmesh run`` follows them)."""
    return list(_DISPATCHED)


class Campaign:
    """A science campaign: activities, dispatched together, followed by events.

    Args:
        name: a human-readable name.
        client: the :class:`Client` to use (default: the one set by ``zm.connect()``,
            else the local agent).
    """

    def __init__(self, name: str, *, client: Client | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("a campaign needs a non-empty name")
        self.name = name
        self._client = client
        self._activities: dict[str, Activity] = {}
        self._futures: dict[str, ActivityFuture] = {}
        self._tracker = Tracker(name)
        self.id: str | None = None
        self.monitor = ""
        self._request_id = uuid.uuid4().hex
        self._ended = threading.Event()
        self._outcome: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._dispatch_lock: asyncio.Lock | None = None
        self._watch_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Campaign({self.name!r}, id={self.id!r}, activities={len(self._futures)})"

    # -- building ---------------------------------------------------------------
    @property
    def client(self) -> Client:
        """The client this campaign talks through."""
        if self._client is None:
            self._client = default_client()
        return self._client

    @property
    def activities(self) -> list[Activity]:
        """The activities added (empty for an attached campaign)."""
        return list(self._activities.values())

    @property
    def futures(self) -> dict[str, ActivityFuture]:
        """Activity name -> future."""
        return dict(self._futures)

    def add_activity(self, activity: Activity) -> ActivityFuture:
        """Add one activity; returns its future."""
        self.add_activities([activity])
        return activity.future

    def add_activities(self, activities: Iterable[Activity]) -> None:
        """Add activities (names must be unique in the campaign)."""
        if self.id is not None:
            raise FailedPrecondition(f"campaign {self.name!r} was already dispatched")
        acts = list(activities)
        seen: set[str] = set()
        for act in acts:
            if not isinstance(act, Activity):
                raise InvalidInput(f"not an activity: {act!r}")
            if act.name in self._futures or act.name in seen:
                raise InvalidInput(f"activity name {act.name!r} is already used in this campaign")
            if act._future is not None:
                raise InvalidInput(f"activity {act.name!r} already belongs to a campaign")
            seen.add(act.name)
        for act in acts:
            fut = ActivityFuture(act.name, is_function=act.is_function)
            act._bind(fut)
            self._activities[act.name] = act
            self._futures[act.name] = fut
            self._tracker.add(act.name)

    def _check_references(self) -> None:
        if not self._activities:
            raise InvalidInput(f"campaign {self.name!r} has no activities")
        for act in self._activities.values():
            for dep in act.depends_on:
                if dep not in self._activities:
                    raise InvalidInput(
                        f"activity {act.name!r} depends on {dep!r}, which is not in this campaign"
                    )

    # -- dispatch -----------------------------------------------------------------
    def dispatch(self, timeout: float | None = None) -> str:
        """Submit the campaign and start following it; returns the campaign id.

        Raises the mapped :class:`~zambeze_mesh.errors.ZmeshError` when the mesh
        rejects it (e.g. :class:`InvalidInput` for a dependency cycle). Calling it
        again returns the same id.
        """
        return bridge.run(self._dispatch(), timeout)

    async def dispatch_async(self) -> str:
        """Async twin of :meth:`dispatch`."""
        return await bridge.run_async(self._dispatch())

    async def _dispatch(self) -> str:
        if self._dispatch_lock is None:
            self._dispatch_lock = asyncio.Lock()
        async with self._dispatch_lock:
            if self.id is not None:
                return self.id
            self._check_references()
            specs = [a.to_spec() for a in self._activities.values()]
            res = await self.client.submit(self.name, specs, client_request_id=self._request_id)
            self.id, self.monitor = res.campaign_id, res.monitor
            _DISPATCHED.append(self)
            self._tracker.submitted(res.campaign_id)
            self._start_watch()
            return self.id

    def _start_watch(self) -> None:
        assert self.id is not None
        self._watch_task = asyncio.get_running_loop().create_task(self._follow(self.id))

    async def _follow(self, campaign_id: str) -> None:
        """Follow ``Watch`` from seq 0: update the tracker, complete the futures."""
        error: BaseException | None = None
        try:
            stream = self.client._watch_wire(campaign_id, 0, True)
            async with contextlib.aclosing(stream):
                async for batch in stream:
                    for row in self._tracker.apply_wire(batch):
                        self._finish_row(row)
                    if is_final_wire(batch[-1]):
                        break
                else:
                    error = Unavailable(f"the event stream of campaign {campaign_id} ended early")
        except asyncio.CancelledError:
            error = ZmeshError("stopped following the campaign")
        except Exception as exc:
            error = exc
        finally:
            self._end(error)

    def _finish_row(self, row: ActivityRow | ActivityStatus) -> None:
        fut = self._future_for(row.name)
        fut._finish(
            row.state,
            agent=row.agent,
            attempt=row.attempt,
            message=row.message,
            detail=row.detail,
            result=row.result,
        )

    def _future_for(self, name: str) -> ActivityFuture:
        fut = self._futures.get(name)
        if fut is None:
            fut = self._futures[name] = ActivityFuture(name)
        return fut

    def _end(self, error: BaseException | None) -> None:
        snap = self._tracker.snapshot()
        if error is None:
            for name, fut in list(self._futures.items()):
                fut._fail(
                    ZmeshError(
                        f"campaign ended {snap.state} without a final state for activity {name!r}"
                    )
                )
            if not self._outcome.done():
                self._outcome.set_result(snap.state)
        else:
            for fut in list(self._futures.values()):
                fut._fail(error)
            if not self._outcome.done():
                self._outcome.set_exception(error)
        self._ended.set()

    def _require_id(self) -> str:
        if self.id is None:
            raise FailedPrecondition(f"campaign {self.name!r} has not been dispatched yet")
        return self.id

    # -- following --------------------------------------------------------------
    def snapshot(self) -> CampaignSnapshot:
        """The latest known state of the campaign and every activity."""
        return self._tracker.snapshot()

    def poll(
        self,
        blocking: bool = False,
        *,
        refresh: float = 0.25,
        console: Console | None = None,
        timeout: float | None = None,
    ) -> dict[str, str]:
        """Activity name -> state (``"RUNNING"``, ...).

        With ``blocking=True``, show a live table (terminal or notebook) until the
        campaign ends, then return the final states (raising if following failed).
        """
        if not blocking:
            return self._tracker.snapshot().states
        self._require_id()
        from zambeze_mesh.campaign.live import show_live

        ended = show_live(
            self._tracker.snapshot, self._ended, refresh=refresh, console=console, timeout=timeout
        )
        if not ended:
            raise TimeoutError(f"campaign {self.name!r} still running after {timeout} s")
        self._raise_if_failed()
        return self._tracker.snapshot().states

    def _raise_if_failed(self) -> None:
        if self._outcome.done() and self._outcome.exception() is not None:
            raise self._outcome.exception()  # type: ignore[misc]

    def wait(self, timeout: float | None = None) -> str:
        """Block until the campaign ends; its final state (``"SUCCEEDED"``, ...).

        Raises ``TimeoutError`` after ``timeout`` seconds, or the error that stopped
        the event stream.
        """
        self._require_id()
        try:
            return self._outcome.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"campaign {self.name!r} still running after {timeout} s") from None

    async def wait_async(self, timeout: float | None = None) -> str:
        """Async twin of :meth:`wait`."""
        self._require_id()
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(self._outcome)), timeout
            )
        except TimeoutError:
            raise TimeoutError(f"campaign {self.name!r} still running after {timeout} s") from None

    def events(self, after_seq: int = 0) -> AsyncIterator[Event]:
        """Async iterator of the campaign's events with ``seq > after_seq``, until it ends."""
        return self.client.watch(self._require_id(), after_seq)

    def cancel(self) -> CampaignStatus:
        """Cancel every unfinished activity; returns the campaign status."""
        return bridge.run(self.client.cancel(self._require_id()))

    async def cancel_async(self) -> CampaignStatus:
        """Async twin of :meth:`cancel`."""
        return await self.client.cancel(self._require_id())

    def status(self) -> CampaignStatus:
        """The campaign's current status, as the monitor knows it (``Get``)."""
        return bridge.run(self.client.get(self._require_id()))

    async def status_async(self) -> CampaignStatus:
        """Async twin of :meth:`status`."""
        return await self.client.get(self._require_id())

    def provenance(self, path: str | os.PathLike[str], **options: Any) -> Path:
        """Export the campaign's Provenance Run Crate to ``path`` (a directory or a
        ``.zip``), finished or running; see :func:`zambeze_mesh.provenance.export_crate`
        for ``options`` (``license``, ``check_outputs``). Needs the ``provenance`` extra."""
        return bridge.run(self.provenance_async(path, **options))

    async def provenance_async(self, path: str | os.PathLike[str], **options: Any) -> Path:
        """Async twin of :meth:`provenance`."""
        from zambeze_mesh.provenance.export import export_crate

        return await export_crate(self._require_id(), path, client=self.client, **options)

    @property
    def done(self) -> bool:
        """True once the campaign ended (or following it failed)."""
        return self._ended.is_set()

    # -- attaching ----------------------------------------------------------------
    @classmethod
    def attach(cls, campaign_id: str, client: Client | None = None) -> Campaign:
        """Follow an existing campaign (e.g. one dispatched by another process)."""
        return bridge.run(cls._attach(campaign_id, client))

    @classmethod
    async def attach_async(cls, campaign_id: str, client: Client | None = None) -> Campaign:
        """Async twin of :meth:`attach`."""
        return await bridge.run_async(cls._attach(campaign_id, client))

    @classmethod
    async def _attach(cls, campaign_id: str, client: Client | None) -> Campaign:
        client = client or default_client()
        status = await client.get(campaign_id)
        camp = cls(status.name or campaign_id, client=client)
        camp.id, camp.monitor = status.campaign_id or campaign_id, status.monitor
        camp._tracker.load(status)
        for a in status.activities:
            camp._future_for(a.name)
            if a.state in FINAL_ACTIVITY_STATES:
                camp._finish_row(a)
        camp._start_watch()
        return camp
