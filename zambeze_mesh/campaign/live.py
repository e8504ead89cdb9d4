"""Live display of a campaign table in a terminal (rich Live) or a Jupyter notebook."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live

from zambeze_mesh.campaign.tracker import CampaignSnapshot
from zambeze_mesh.campaign.view import build_table

__all__ = ["in_jupyter", "show_live"]

_HTML = '<pre style="font-family: Menlo, Consolas, monospace; line-height: 1.25">{code}</pre>'


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached)."""
    try:
        from IPython import get_ipython  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _html(snap: CampaignSnapshot) -> Any:
    from IPython.display import HTML  # type: ignore[import-not-found, unused-ignore]

    console = Console(file=io.StringIO(), record=True, width=120, force_jupyter=False)
    console.print(build_table(snap, _now_ms()))
    return HTML(console.export_html(inline_styles=True, code_format=_HTML))


def show_live(
    snapshot: Callable[[], CampaignSnapshot],
    done: threading.Event,
    *,
    refresh: float = 0.25,
    console: Console | None = None,
    timeout: float | None = None,
) -> bool:
    """Render the table until ``done`` is set (or ``timeout``); True when ``done``.

    In a Jupyter kernel (and no explicit ``console``) an output cell is updated in
    place; otherwise rich ``Live`` redraws the table in the terminal (a non-terminal
    console just gets the final table).
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def wait_step() -> bool:
        step = refresh if deadline is None else max(0.0, min(refresh, deadline - time.monotonic()))
        return done.wait(step)

    def expired() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    if console is None and in_jupyter():
        from IPython.display import display  # type: ignore[import-not-found, unused-ignore]

        handle = display(_html(snapshot()), display_id=True)
        while not wait_step() and not expired():
            handle.update(_html(snapshot()))
        handle.update(_html(snapshot()))
        return done.is_set()

    with Live(
        build_table(snapshot(), _now_ms()),
        console=console,
        refresh_per_second=max(1.0, 1 / refresh),
        auto_refresh=False,
    ) as live:
        while not wait_step() and not expired():
            live.update(build_table(snapshot(), _now_ms()), refresh=True)
        live.update(build_table(snapshot(), _now_ms()), refresh=True)
    if not live.console.is_terminal:
        live.console.line()  # rich leaves the last line open on non-terminals
    return done.is_set()
