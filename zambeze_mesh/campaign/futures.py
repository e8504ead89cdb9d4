"""Per-activity futures, completed by the campaign's watcher as events arrive.

``act.future`` is a :class:`concurrent.futures.Future`: ``result(timeout)`` blocks
until the activity reaches a final state. A function :class:`PythonActivity`
resolves to the function's return value; other activities to an
:class:`ActivityResult`. FAILED, SKIPPED and CANCELLED activities raise
:class:`ActivityFailed`.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from zambeze_mesh.errors import ZmeshError

__all__ = ["ActivityFailed", "ActivityFuture", "ActivityResult"]


@dataclass(frozen=True)
class ActivityResult:
    """Outcome of a non-function activity that succeeded."""

    state: str
    agent: str
    exit_code: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    detail: Mapping[str, str] = field(default_factory=dict)


class ActivityFailed(ZmeshError):
    """An activity ended FAILED, SKIPPED or CANCELLED.

    Attributes: ``activity``, ``state``, ``message``, ``agent``, ``attempt``,
    ``returncode`` (the process exit code, if any), ``stderr_tail`` and the raw
    ``detail`` map of the final event. (``exit_code`` is the CLI's exit code, as for
    every :class:`ZmeshError`.)
    """

    def __init__(
        self,
        activity: str,
        state: str,
        message: str = "",
        *,
        agent: str = "",
        attempt: int = 0,
        detail: Mapping[str, str] | None = None,
    ) -> None:
        self.activity = activity
        self.state = state
        self.message = message
        self.agent = agent
        self.attempt = attempt
        self.detail: dict[str, str] = dict(detail or {})
        self.stderr_tail = self.detail.get("stderr_tail", "")
        self.returncode = _exit_code(self.detail)
        text = f"activity {activity!r} {state}" + (f" on {agent}" if agent else "")
        if message:
            text += f": {message}"
        if self.stderr_tail:
            text += "\n--- stderr (tail) ---\n" + self.stderr_tail.rstrip("\n")
        super().__init__(text)

    def __reduce__(self) -> Any:
        return (
            _rebuild_failed,
            (self.activity, self.state, self.message, self.agent, self.attempt, self.detail),
        )


def _rebuild_failed(
    activity: str, state: str, message: str, agent: str, attempt: int, detail: dict[str, str]
) -> ActivityFailed:
    return ActivityFailed(activity, state, message, agent=agent, attempt=attempt, detail=detail)


def _exit_code(detail: Mapping[str, str]) -> int | None:
    try:
        return int(detail["exit_code"])
    except (KeyError, ValueError):
        return None


class ActivityFuture(concurrent.futures.Future[Any]):
    """The future outcome of one activity of a campaign.

    Created when the activity is added to a campaign; completed by the campaign's
    watcher. A single activity cannot be cancelled on its own: ``cancel()``
    returns False; cancel the campaign instead.
    """

    def __init__(self, activity_name: str, *, is_function: bool = False) -> None:
        super().__init__()
        self.activity_name = activity_name
        self.is_function = is_function

    def cancel(self) -> bool:
        """Activities are cancelled with ``Campaign.cancel()``; this returns False."""
        return False

    def _finish(
        self,
        state: str,
        *,
        agent: str = "",
        attempt: int = 0,
        message: str = "",
        detail: Mapping[str, str] | None = None,
        result: bytes = b"",
    ) -> None:
        """Complete from a final activity state (no-op when already done)."""
        if self.done():
            return
        detail = dict(detail or {})
        if state != "SUCCEEDED":
            self._fail(
                ActivityFailed(
                    self.activity_name,
                    state,
                    message,
                    agent=agent,
                    attempt=attempt,
                    detail=detail,
                )
            )
            return
        if result or self.is_function:
            try:
                value = cloudpickle.loads(result) if result else None
            except Exception as exc:
                self._fail(
                    ActivityFailed(
                        self.activity_name,
                        state,
                        f"cannot unpickle the function result: {exc!r}",
                        agent=agent,
                        attempt=attempt,
                        detail=detail,
                    )
                )
                return
        else:
            value = ActivityResult(
                state=state,
                agent=agent,
                exit_code=_exit_code(detail),
                stdout_tail=detail.get("stdout_tail", ""),
                stderr_tail=detail.get("stderr_tail", ""),
                detail=detail,
            )
        try:
            self.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass

    def _fail(self, exc: BaseException) -> None:
        """Complete with an exception (no-op when already done)."""
        if self.done():
            return
        try:
            self.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass

    def __repr__(self) -> str:
        return f"<ActivityFuture {self.activity_name!r} {self._state.lower()}>"
