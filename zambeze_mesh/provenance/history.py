"""What happened in a campaign, read back from its journal: attempts, data, transfers.

Pure functions over the wire ``ProvenanceRecord`` (no I/O, no rocrate), so the crate
builder only maps this model to RO-Crate entities. An attempt ends with its final
event, or with the ``RETRYING`` event that opens the next attempt (the monitor
journals a failed attempt that has retries left that way).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from zambeze_mesh.v1 import campaigns_pb2, common_pb2

S = common_pb2
_STATE = {v: k.removeprefix("ACTIVITY_STATE_") for k, v in S.ActivityState.items()}
_CAMPAIGN = {v: k.removeprefix("CAMPAIGN_STATE_") for k, v in S.CampaignState.items()}
FINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"}


@dataclass
class DataRef:
    """A file or directory an attempt read or produced (``uri``: ``NAME://path``)."""

    uri: str
    size: int | None = None
    sha256: str = ""
    is_dir: bool = False
    role: str = "input"
    ref: str = ""  # "@output:<activity>[/sub]" when it named another activity's output


@dataclass
class Transfer:
    """One staging of data onto the attempt's agent."""

    uri: str
    bytes: int
    method: str
    rate_mib_s: str


@dataclass
class Attempt:
    """One attempt of one activity."""

    activity: str
    number: int
    agent: str = ""
    state: str = "PENDING"
    message: str = ""
    start_ms: int = 0
    run_ms: int = 0
    end_ms: int = 0
    exit_code: int | None = None
    plugin: str = ""
    detail: dict[str, str] = field(default_factory=dict)
    inputs: list[DataRef] = field(default_factory=list)
    output_root: str = ""  # NAME://output_dir of a successful attempt
    outputs: list[DataRef] = field(default_factory=list)
    outputs_error: str = ""
    transfers: list[Transfer] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, int]:
        return (self.activity, self.number)


@dataclass
class History:
    """A campaign's attempts in the order they started."""

    record: campaigns_pb2.ProvenanceRecord
    attempts: list[Attempt]
    state: str
    start_ms: int
    end_ms: int

    def by_activity(self, name: str) -> list[Attempt]:
        """The attempts of one activity, first to last."""
        return [a for a in self.attempts if a.activity == name]


def uri_of(agent: str, path: str) -> str:
    """``NAME://path`` for an absolute (or agent-relative) path on ``agent``."""
    return f"{agent}://{path}"


def history_of(record: campaigns_pb2.ProvenanceRecord) -> History:
    """Fold a record's events into attempts."""
    attempts: dict[tuple[str, int], Attempt] = {}
    start = record.status.created_unix_ms
    end = record.finished_unix_ms
    for ev in record.events:
        if not ev.activity:
            if ev.campaign_state == S.CAMPAIGN_STATE_RUNNING and not start:
                start = ev.time_unix_ms
            elif ev.campaign_state not in (0, S.CAMPAIGN_STATE_RUNNING):
                end = end or ev.time_unix_ms
            continue
        state = _STATE.get(ev.state, "UNSPECIFIED")
        if state == "RETRYING":
            prev = attempts.get((ev.activity, ev.attempt - 1))
            if prev is not None and prev.state not in FINAL:
                prev.state = "FAILED"
                prev.message = ev.message
                prev.end_ms = ev.time_unix_ms
                prev.seqs.append(ev.seq)
                _finish(prev, dict(ev.detail))
            continue
        att = attempts.get((ev.activity, ev.attempt))
        if att is None:
            att = attempts[(ev.activity, ev.attempt)] = Attempt(ev.activity, ev.attempt)
            att.start_ms = ev.time_unix_ms
        att.seqs.append(ev.seq)
        if ev.agent:
            att.agent = ev.agent
        if state == "RUNNING" and not att.run_ms:
            att.run_ms = ev.time_unix_ms
        if state == "STAGING" and "bytes" in ev.detail:
            att.transfers.append(
                Transfer(
                    ev.detail.get("uri", ""),
                    _int(ev.detail.get("bytes")) or 0,
                    ev.detail.get("method", ""),
                    ev.detail.get("rate_mib_s", ""),
                )
            )
        if att.state not in FINAL:
            att.state = state
        if state in FINAL:
            att.message = ev.message
            att.end_ms = ev.time_unix_ms
            _finish(att, dict(ev.detail))
    ordered = sorted(attempts.values(), key=lambda a: a.seqs[0] if a.seqs else 0)
    state = _CAMPAIGN.get(record.status.state, "UNSPECIFIED")
    return History(record, ordered, state, start, end)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def _finish(att: Attempt, detail: dict[str, str]) -> None:
    """Read the final detail: exit code, plugin, inputs and outputs with digests."""
    att.detail = detail
    att.exit_code = _int(detail.get("exit_code"))
    att.plugin = detail.get("plugin", "")
    att.inputs = []
    for rec in _json_list(detail.get("inputs")):
        if not isinstance(rec, dict) or "uri" not in rec:
            continue
        uri = str(rec["uri"])
        holder, sep, path = uri.partition("://")
        if sep and holder == att.agent and not path.startswith("/") and rec.get("path"):
            uri = uri_of(holder, str(rec["path"]))  # local and relative: name it absolutely
        att.inputs.append(
            DataRef(
                uri=uri,
                size=_int(rec.get("size")),
                sha256=str(rec.get("sha256", "")),
                is_dir=rec.get("dir") == "1",
                role=str(rec.get("role", "input")),
                ref=str(rec.get("ref", "")),
            )
        )
    if att.state != "SUCCEEDED" or not att.agent:
        return
    if detail.get("output_dir"):
        att.output_root = uri_of(att.agent, detail["output_dir"])
    att.outputs_error = detail.get("outputs_error", "")
    base = detail.get("outputs_dir", "").rstrip("/")
    for item in _json_list(detail.get("outputs")):
        if not isinstance(item, list) or len(item) != 3:
            continue
        rel, size, sha = item
        att.outputs.append(
            DataRef(uri_of(att.agent, f"{base}/{rel}"), int(size), str(sha), role="output")
        )


def _json_list(text: str | None) -> list[object]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []
