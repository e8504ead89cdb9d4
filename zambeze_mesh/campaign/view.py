"""The live campaign table: a pure function of a :class:`CampaignSnapshot`."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from zambeze_mesh.campaign.tracker import ActivityRow, CampaignSnapshot

__all__ = ["STATE_STYLES", "build_table", "format_age"]

STATE_STYLES: dict[str, str] = {
    "PENDING": "dim",
    "READY": "cyan",
    "BIDDING": "cyan",
    "AWARDED": "blue",
    "QUEUED": "blue",
    "STAGING": "magenta",
    "RUNNING": "yellow",
    "RETRYING": "dark_orange",
    "SUCCEEDED": "bold green",
    "FAILED": "bold red",
    "CANCELLED": "red",
    "SKIPPED": "dim red",
}

_MAX_MESSAGE = 80


def format_age(ms: int) -> str:
    """``1500`` -> ``"1.5s"``, ``125000`` -> ``"2m05s"``, ``7_200_000`` -> ``"2h00m"``."""
    s = max(0, ms) / 1000
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _info(row: ActivityRow, now_ms: int) -> str:
    msg = row.message.strip().splitlines()[0] if row.message.strip() else ""
    if len(msg) > _MAX_MESSAGE:
        msg = msg[: _MAX_MESSAGE - 1] + "…"
    if msg:
        return msg
    if row.time_unix_ms and not row.final:
        return f"for {format_age(now_ms - row.time_unix_ms)}"
    if row.final and "exit_code" in row.detail:
        return f"exit code {row.detail['exit_code']}"
    return ""


def build_table(snap: CampaignSnapshot, now_ms: int) -> Table:
    """A rich table with one row per activity: name, state, agent, attempt, message/time."""
    state_style = STATE_STYLES.get(snap.state, "")
    title = Text.assemble(
        (snap.name, "bold"),
        f" [{snap.campaign_id}] " if snap.campaign_id else " ",
        (snap.state, state_style),
    )
    if snap.started_unix_ms:
        # an ended campaign shows its real duration, a running one the time so far
        end = snap.finished_unix_ms if snap.final and snap.finished_unix_ms else now_ms
        title.append(f"  {format_age(end - snap.started_unix_ms)}", style="dim")
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("activity", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("agent", no_wrap=True)
    table.add_column("attempt", justify="right")
    table.add_column("message / time")
    for row in snap.rows:
        table.add_row(
            row.name,
            Text(row.state, style=STATE_STYLES.get(row.state, "")),
            row.agent or "-",
            str(row.attempt) if row.attempt else "-",
            _info(row, now_ms),
        )
    counts: dict[str, int] = {}
    for row in snap.rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    caption = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    if snap.message:
        caption += f" — {snap.message}"
    table.caption = caption
    table.caption_justify = "left"
    return table
