"""Contractor side of the contract net: turning a call for proposals into a bid.

Pure arithmetic: the contractor passes in its queue, slots, run-time history and
what it would have to pull; nothing here reads clocks or the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.scheduling.matching import fits
from zambeze_mesh.scheduling.model import ActivityDef, AgentInfo

#: Assumed bandwidth (bytes per second) when none is known: 100 MB/s.
DEFAULT_BANDWIDTH_BPS = 100e6
#: Run time assumed for the marginal cost when a contractor has no (or a tiny) history:
#: a burst of tenders still spreads over agents that know nothing yet.
MIN_MARGINAL_RUNTIME_S = 0.001


@dataclass(frozen=True, order=True)
class TenderKey:
    """Identity of one negotiation: one attempt of one activity of one campaign."""

    campaign_id: str
    activity: str
    attempt: int


@dataclass(frozen=True)
class Bid:
    """A contractor's answer to one tender: an estimate in seconds, or a refusal.

    ``busy`` qualifies a refusal: the contractor could run the activity but has no
    room right now (its queue is full), so the monitor should offer it again later
    rather than fail it. A refusal with ``busy=False`` means the activity does not
    fit the contractor (labels, plugin, cpus...). ``busy`` means nothing on a bid
    that is not refused.
    """

    key: TenderKey
    estimate_s: float = 0.0
    refused: bool = False
    reason: str = ""
    queue_wait_s: float = 0.0
    transfer_s: float = 0.0
    busy: bool = False
    #: What each further activity queued at this contractor adds to the estimate.
    marginal_s: float = 0.0

    @classmethod
    def refusal(cls, key: TenderKey, reason: str) -> Bid:
        """A refusal of ``key`` for ``reason`` (the activity does not fit here)."""
        return cls(key=key, refused=True, reason=reason)

    @classmethod
    def busy_refusal(cls, key: TenderKey, reason: str) -> Bid:
        """A refusal of ``key`` only for lack of room right now: ask again later."""
        return cls(key=key, refused=True, reason=reason, busy=True)


def _non_negative(what: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{what} must be a finite number >= 0, got {value}")


def estimate_bid(
    activity: ActivityDef,
    *,
    key: TenderKey | None = None,
    agent: AgentInfo | None = None,
    queue_len: int = 0,
    free_slots: int = 1,
    slots: int = 1,
    avg_runtime_s: float = 0.0,
    missing_inputs_bytes: int = 0,
    bandwidth_bps: float = DEFAULT_BANDWIDTH_BPS,
    service_interval_s: float = 0.0,
) -> Bid:
    """Bid on ``activity``: estimated completion = queue wait + run time + input pull.

    * queue wait: ``queue_len`` activities wait ahead of this one; if they fill the
      ``free_slots``, it waits ``(queue_len - free_slots + 1) / slots`` run times.
    * run time: ``avg_runtime_s`` (the contractor's history for this plugin).
    * input pull: ``missing_inputs_bytes / bandwidth_bps`` (bytes per second;
      a non-positive bandwidth means "unknown" and uses ``DEFAULT_BANDWIDTH_BPS``).

    ``marginal_s`` is what each further activity queued here would add: run time per
    slot (at least :data:`MIN_MARGINAL_RUNTIME_S` per slot), or the measured
    ``service_interval_s`` (time between completions while the contractor was
    saturated: it includes everything else its process does) if larger. Queue wait
    is ``ahead * marginal_s``. A contractor bids on every tender of a call as if it
    were the only one, and the monitor adds ``marginal_s`` for each award it makes to
    this contractor after the bid.

    Refuses (``Bid.refused``) when ``agent`` is given and the activity does not fit
    it (:func:`~.matching.fits`), or when the contractor has no slots at all.
    """
    if key is None:
        key = TenderKey("", activity.name, 0)
    if agent is not None:
        why = fits(activity, agent)
        if why is not None:
            return Bid.refusal(key, why)
    if slots <= 0:
        return Bid.refusal(key, "has no slots")
    if queue_len < 0 or free_slots < 0 or missing_inputs_bytes < 0:
        raise InvalidInput("queue_len, free_slots and missing_inputs_bytes must be >= 0")
    _non_negative("avg_runtime_s", avg_runtime_s)
    _non_negative("service_interval_s", service_interval_s)
    if not math.isfinite(bandwidth_bps) or bandwidth_bps <= 0:
        bandwidth_bps = DEFAULT_BANDWIDTH_BPS
    marginal = max(avg_runtime_s, MIN_MARGINAL_RUNTIME_S) / slots
    marginal = max(marginal, service_interval_s)
    ahead = max(0, queue_len - free_slots + 1)
    queue_wait = ahead * max(avg_runtime_s / slots, service_interval_s)
    transfer = missing_inputs_bytes / bandwidth_bps if missing_inputs_bytes else 0.0
    return Bid(
        key=key,
        estimate_s=queue_wait + avg_runtime_s + transfer,
        queue_wait_s=queue_wait,
        transfer_s=transfer,
        marginal_s=marginal,
    )
