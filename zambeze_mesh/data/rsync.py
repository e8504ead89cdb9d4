"""The ``rsync`` transfer method: rsync over ssh from the holder, sha256-checked.

The holder offers ``rsync`` only for a path it resolved through its sandbox and
advertises where to pull it from in ``OfferResponse.method_params``: ``host``,
``port`` (optional), ``user`` and the resolved absolute ``path``. The requester
runs ``rsync -a -L --partial -e "<its ssh command> -p PORT" user@host:path`` with
its own ssh identity (:class:`RsyncSettings`, from ``AgentConfig.rsync_ssh``).

Files land first in a hidden staging directory next to the destination
(``.<name>.zrsync.zpart``; ``--partial`` keeps an interrupted file there so a
retry after a broken connection resumes it; the directory is removed when the
fetch ends, whatever the outcome). Every file is then checked against the offer (size and sha256
of a file, or of each manifest entry of a directory: only the manifest's files are
asked for, with ``--files-from``) and only then renamed into place. On a mismatch
the staging directory is deleted and :class:`DataIntegrityError` is raised:
nothing is left at the destination.

What the ssh account can read is the holder's business: the sandbox decides what
is *offered*; an ssh key grants what the account grants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zambeze_mesh.data.catalog import sha256_file
from zambeze_mesh.data.methods import RSYNC
from zambeze_mesh.data.receive import already_present, manifest_dest
from zambeze_mesh.data.wire import info_from_pb, manifest_from_pb
from zambeze_mesh.errors import (
    DataIntegrityError,
    FailedPrecondition,
    InvalidInput,
    Unavailable,
)
from zambeze_mesh.settings.checks import check_host, check_user

if TYPE_CHECKING:
    from zambeze_mesh.data.client import FetchJob, FetchResult
    from zambeze_mesh.settings.config import AgentConfig

__all__ = [
    "STAGING_SUFFIX",
    "Endpoint",
    "RsyncSettings",
    "check_host",
    "check_user",
    "endpoint_from_params",
    "rsync_command",
    "rsync_fetch",
    "staging_dir",
]

STAGING_SUFFIX = ".zrsync.zpart"
_STAT_RE = re.compile(r"Total transferred file size: ([\d,.]+)")
STDERR_TAIL = 2000
RETRIES = 2
RETRYABLE_EXIT = frozenset({10, 12, 30, 35})
"""rsync exit codes of a connection that broke mid-transfer: retried, resuming."""
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RsyncSettings:
    """The requester's side: its ssh command (identity, options) and rsync program."""

    ssh: str = "ssh"
    rsync: str = "rsync"
    io_timeout_s: int = 600
    """rsync ``--timeout``: give up when no data moves for this long."""

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> RsyncSettings:
        """Settings from an agent's ``rsync_ssh`` (default ``ssh``)."""
        return cls(ssh=cfg.rsync_ssh or "ssh")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the holder says the object can be pulled from."""

    host: str
    user: str
    path: str
    port: int = 0

    def remote(self, suffix: str = "") -> str:
        """``user@host:path`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.path}{suffix}"


def endpoint_from_params(params: Mapping[str, str]) -> Endpoint:
    """Validate an offer's ``method_params`` (they end up on a command line)."""
    host = check_host(params.get("host", ""))
    user = check_user(params.get("user", ""))
    path = params.get("path", "")
    if not path.startswith("/") or "\x00" in path or "\n" in path or len(path) > 4096:
        raise InvalidInput(f"rsync offer: bad path {path[:80]!r}")
    port_s = params.get("port", "") or "0"
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise InvalidInput(f"rsync offer: bad port {port_s[:20]!r}")
    return Endpoint(host, user, path, int(port_s))


def staging_dir(dest: Path) -> Path:
    """The hidden directory next to ``dest`` where rsync writes before verification."""
    return dest.with_name(f".{dest.name}{STAGING_SUFFIX}")


def rsync_command(
    settings: RsyncSettings, ep: Endpoint, target: Path, *, files_from: bool
) -> list[str]:
    """The rsync argv: ``-a -L --partial`` over ``settings.ssh`` (then the holder's port)."""
    # Appended: for ssh the first value of an option wins, so the requester's own
    # command may override the holder's port and these defaults.
    port = ["-p", str(ep.port)] if ep.port else []
    ssh = [
        *(shlex.split(settings.ssh) or ["ssh"]),
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=30",
        *port,
    ]
    argv = [
        settings.rsync,
        "-a",
        "-L",
        "--partial",
        "--no-owner",
        "--no-group",
        "--stats",
        f"--timeout={settings.io_timeout_s}",
        "-e",
        shlex.join(ssh),
    ]
    if files_from:
        argv += ["--from0", "--files-from=-", ep.remote("/"), str(target) + "/"]
    else:
        argv += [ep.remote(), str(target)]
    return argv


async def _run(argv: Sequence[str], stdin: bytes) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise Unavailable(f"cannot run {argv[0]!r}: {exc}") from None
    try:
        out, err = await proc.communicate(stdin)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    rc = proc.returncode if proc.returncode is not None else -1
    return rc, out.decode(errors="replace"), err.decode(errors="replace")


def _transferred(stdout: str, fallback: int) -> int:
    m = _STAT_RE.search(stdout)
    if not m:
        return fallback
    digits = re.sub(r"[^\d]", "", m.group(1))
    return int(digits) if digits else fallback


def _verify(staged: Path, size: int, sha: str, shown: str) -> None:
    try:
        st = os.lstat(staged)
    except FileNotFoundError:
        raise DataIntegrityError(f"rsync did not deliver {shown!r}") from None
    if not os.path.isfile(staged) or os.path.islink(staged):
        raise DataIntegrityError(f"rsync delivered {shown!r} as something else than a file")
    if st.st_size != size:
        raise DataIntegrityError(f"{shown!r}: rsync delivered {st.st_size} bytes, expected {size}")
    got = sha256_file(staged)
    if got != sha:
        raise DataIntegrityError(f"{shown!r}: sha256 mismatch after rsync (expected {sha})")


def _install(pairs: Sequence[tuple[Path, Path]]) -> None:
    for staged, target in pairs:
        if target.is_dir():
            raise FailedPrecondition(f"{str(target)!r} is a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)


async def rsync_fetch(job: FetchJob) -> FetchResult:
    """The ``rsync`` method (see the module doc); raises :class:`DataIntegrityError`."""
    from zambeze_mesh.data.client import FetchResult

    t0 = time.monotonic()
    offer = job.offer
    info = info_from_pb(offer.info)
    ep = endpoint_from_params(offer.method_params)
    settings = getattr(job.client, "rsync", None) or RsyncSettings()
    dest = job.dest
    if info.is_dir:
        if dest.exists() and not dest.is_dir():
            raise FailedPrecondition(f"{str(dest)!r} exists and is not a directory")
        entries = [(e.relpath, e.size, e.sha256) for e in manifest_from_pb(offer.manifest)]
        targets = [manifest_dest(dest, rel) for rel, _, _ in entries]  # holder not trusted
    else:
        entries = [("", info.size, info.sha256)]
        targets = [dest]
    result = FetchResult(0, 0, RSYNC, 0.0, files=len(entries), info=info)
    total = sum(size for _, size, _ in entries)
    todo: list[tuple[str, int, str, Path]] = []
    for (rel, size, sha), target in zip(entries, targets, strict=True):
        if await asyncio.to_thread(already_present, target, size, sha):
            result.skipped += 1
        else:
            todo.append((rel, size, sha, target))
    if todo:
        staging = staging_dir(dest)
        await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
        if info.is_dir:
            argv = rsync_command(settings, ep, staging, files_from=True)
            names = b"".join(rel.encode("utf-8", "surrogateescape") + b"\0" for rel, *_ in todo)
            pairs = [(manifest_dest(staging, rel), target) for rel, _, _, target in todo]
        else:
            argv = rsync_command(settings, ep, staging / "data", files_from=False)
            names = b""
            pairs = [(staging / "data", dest)]
        for attempt in range(RETRIES + 1):
            rc, out, err = await _run(argv, names)
            if rc == 0 or rc not in RETRYABLE_EXIT or attempt == RETRIES:
                break
            log.info("rsync from %s broke (exit %d), resuming", ep.host, rc)
        if rc != 0:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise Unavailable(f"rsync from {ep.host} failed (exit {rc}): {err[-STDERR_TAIL:]}")
        try:
            for (rel, size, sha, _), (staged, _) in zip(todo, pairs, strict=True):
                await asyncio.to_thread(_verify, staged, size, sha, rel or job.path)
            await asyncio.to_thread(_install, pairs)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        result.bytes = _transferred(out, sum(size for _, size, _, _ in todo))
    if job.on_progress is not None:
        job.on_progress(total, total)
    result.seconds = time.monotonic() - t0
    return result
