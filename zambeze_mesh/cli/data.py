"""``zmesh data ls|get|put``: data on any agent of the mesh, from the command line.

The ``Data`` service is for agents only, so the CLI acts *as the local agent*: it
loads that agent's key and certificate from the home (which a local administrator
can read anyway) and calls the holder directly over mTLS. Names resolve through the
running local agent's member view (its Unix socket), else the members stored in the
home. This keeps the wire contract unchanged and moves bytes straight between the
holder and the user's disk, without relaying them through the local daemon.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from zambeze_mesh.data.client import DataClient
from zambeze_mesh.data.uris import parse_uri
from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.settings.home import Home

T = TypeVar("T")


def agent_uri(text: str) -> tuple[str, str]:
    """``NAME://path`` → (agent name, path); anything else is refused."""
    uri = parse_uri(text)
    if uri.scheme != "agent" or uri.agent is None:
        raise InvalidInput(f"expected NAME://path naming data on an agent, got {text!r}")
    return uri.agent, uri.path


def listing_uri(text: str) -> tuple[str, str]:
    """Like :func:`agent_uri`, but ``NAME://`` (no path) means the agent's top directory."""
    name, sep, rest = text.partition("://")
    if sep and name and not rest and name.lower() not in ("file", "output"):
        agent_uri(f"{name}://.")  # the same checks of the name
        return name, "."
    return agent_uri(text)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _run(home: Home, body: Callable[[DataClient], Awaitable[T]]) -> T:
    async def main() -> T:
        client = DataClient.from_home(home)
        try:
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(main())


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet or not sys.stderr.isatty(),
        transient=True,
    )


def ls(home: Home, target: str, *, as_json: bool, limit: int) -> int:
    """List a directory (or describe a file) on an agent; ``NAME://`` lists its top directory."""
    name, path = listing_uri(target)
    entries, truncated = _run(home, lambda c: c.list(name, path, limit))
    if as_json:
        docs = [
            {"path": e.path, "size": e.size, "is_dir": e.is_dir, "mtime_ns": e.mtime_ns}
            | ({"sha256": e.sha256} if e.sha256 else {})
            for e in entries
        ]
        print(json.dumps({"entries": docs, "truncated": truncated}))
        return 0
    table = Table(title=target, show_edge=False)
    for col in ("name", "size", "kind"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for e in entries:
        table.add_row(e.path, "" if e.is_dir else _human(e.size), "dir" if e.is_dir else "file")
    Console().print(table)
    if truncated:
        print(f"(listing truncated at {len(entries)} entries; use --limit)")
    return 0


def get(home: Home, source: str, local: str, *, quiet: bool) -> int:
    """Fetch ``NAME://path`` to ``local``.

    A file goes into ``local`` when that is an existing directory; a directory's
    files are merged into ``local`` (files already identical are not fetched again).
    """
    name, path = agent_uri(source)
    dest = Path(local)

    async def body(client: DataClient) -> str:
        nonlocal dest
        if dest.is_dir() and not (await client.stat(name, path)).is_dir:
            dest = dest / (PurePosixPath(path).name or name)  # a file goes into a directory
        with _progress(quiet) as bar:
            task = bar.add_task(f"get {source}", total=None)

            def on_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            res = await client.fetch(name, path, dest, on_progress=on_progress)
        rate = res.bytes / res.seconds if res.seconds > 0 else 0.0
        skipped = f", {res.skipped} already present" if res.skipped else ""
        return (
            f"fetched {_human(res.bytes)} ({res.files} file{'s' * (res.files != 1)}{skipped}) "
            f"from {source} to {dest} in {res.seconds:.2f} s ({_human(rate)}/s, {res.method})"
        )

    print(_run(home, body))
    return 0


def put(home: Home, local: str, target: str, *, quiet: bool) -> int:
    """Upload a local file or directory to ``NAME://path``."""
    name, path = agent_uri(target)
    src = Path(local)

    async def body(client: DataClient) -> str:
        with _progress(quiet) as bar:
            task = bar.add_task(f"put {target}", total=None)

            def on_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            res = await client.push(src, name, path, on_progress=on_progress)
        skipped = f", {res.skipped} already there" if res.skipped else ""
        return (
            f"pushed {_human(res.bytes)} ({res.files} file{'s' * (res.files != 1)}{skipped}) "
            f"from {src} to {target} in {res.seconds:.2f} s"
        )

    print(_run(home, body))
    return 0
