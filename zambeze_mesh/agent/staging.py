"""Preparing an activity on its contractor: directories, escapes, lazy input staging.

Inputs move only now, when the activity starts here: data on this agent is used in
place; data on another agent is pulled into the working dir over the data fabric,
with ``STAGING`` events carrying bytes, rate and method.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from zambeze_mesh.agent.digests import input_record, local_info
from zambeze_mesh.clock import SYSTEM_CLOCK, Clock
from zambeze_mesh.data.catalog import ObjectInfo
from zambeze_mesh.data.sandbox import check_path_text
from zambeze_mesh.data.uris import expand_escapes, parse_uri
from zambeze_mesh.errors import InvalidInput, NotFound, NotPermitted
from zambeze_mesh.execution import Outcome
from zambeze_mesh.scheduling.model import OUTPUT_REF_PREFIX
from zambeze_mesh.security.owners import owner_dir, wire_owner
from zambeze_mesh.v1 import common_pb2

if TYPE_CHECKING:
    from zambeze_mesh.agent.contractor import Job
    from zambeze_mesh.agent.datasvc import DataService
    from zambeze_mesh.data.client import FetchResult

Emit = Callable[[str, str, dict[str, str] | None], Awaitable[None]]
Fetch = Callable[[str, str, Path], Awaitable["FetchResult"]]
"""``fetch(holder agent, path on it, local destination)``: pull data from another agent."""


@dataclass
class Prepared:
    """What the plugin needs: local dirs, environment and the spec with refs resolved."""

    working_dir: Path
    output_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)
    spec: common_pb2.ActivitySpec | None = None


class Stager:
    """Resolves escapes and references and stages inputs for one agent.

    ``name``/``mesh`` identify the agent, ``data_dir`` is its ``@agentdir``, ``data``
    its data service (sandbox and digest catalog), and ``fetch`` pulls an input from
    another agent over the data fabric.
    """

    def __init__(
        self,
        *,
        name: str,
        mesh: str,
        data_dir: Path,
        data: DataService,
        fetch: Fetch,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.mesh = mesh
        self.data_dir = data_dir
        self.data = data
        self.fetch = fetch
        self.clock = clock
        self._made: set[Path] = set()
        self._checked: dict[Path, tuple[int, int]] = {}
        # (working_dir text, output_dir text) -> resolved dirs: escapes are expanded
        # and checked once (the dirs themselves are re-validated by _check_inside).
        self._dirs: dict[tuple[str, str], tuple[Path, Path]] = {}

    def _remember(self, path: Path, ident: tuple[int, int] | None) -> None:
        """Note a directory made and checked (memoized: mkdir and realpath are slow on
        some filesystems). Only the event loop's thread touches these caches."""
        if len(self._made) > 10_000:
            self._made.clear()
        self._made.add(path)
        if ident is not None:
            if len(self._checked) > 10_000:
                self._checked.clear()
            self._checked[path] = ident

    def _resolve_ref(self, job: Job, value: str) -> str:
        """``@output:act[/sub]`` → ``agent://abs/path[/sub]`` using the monitor's resolution."""
        if not value.startswith(OUTPUT_REF_PREFIX):
            return value
        name, _, sub = value[len(OUTPUT_REF_PREFIX) :].partition("/")
        base = job.item.resolved_inputs.get(OUTPUT_REF_PREFIX + name)
        if not base:
            raise NotFound(f"output of activity {name!r} is not known to this contractor")
        return f"{base}/{sub}" if sub else base

    async def prepare(self, job: Job, emit: Emit) -> Prepared:
        """Create dirs, stage data_uris and script, substitute output refs in args."""
        agent_dir = self.data_dir
        spec = job.item.tender.spec
        # Default dirs are per owner, then per monitor: another member naming this
        # campaign's id in its own award gets its own dirs, never the real campaign's.
        runs = f"@agentdir/runs/{run_scopes(self.mesh, job)[1]}"
        if spec.WhichOneof("body") == "python" and spec.python.function:
            # Shipped functions share one working dir per campaign (they return values).
            default_work = f"{runs}/functions"
        else:
            default_work = f"{runs}/{_safe(job.key.activity)}"
        work_text = spec.working_dir or default_work
        out_text = spec.output_dir or "@workingdir/output"
        working, output = self._resolve_dirs(work_text, out_text)
        dirs = [
            (what, path, self._checked.get(path), path in self._made)
            for what, path in (("working_dir", working), ("output_dir", output))
        ]
        # Directories made and checked before are re-validated by one stat each, here
        # (the hot path: a thread hop per activity cost a third of the throughput);
        # anything else (realpath, mkdir) runs off the event loop, and the caches are
        # updated here.
        if not all(
            made and checked is not None and _same(path, checked) for _, path, checked, made in dirs
        ):
            for (_, path, _, _), ident in zip(
                dirs, await asyncio.to_thread(self._make_dirs, dirs), strict=True
            ):
                self._remember(path, ident)
        prepared = Prepared(working, output)
        used: set[str] = set()
        for uri in spec.data_uris:
            local = await self.stage(job, uri, working / "inputs", emit, _input_name(uri, used))
            prepared.inputs.append(local)
        env = {
            "ZMESH_WORKING_DIR": str(working),
            "ZMESH_OUTPUT_DIR": str(output),
            "ZMESH_AGENT_DIR": str(agent_dir),
            "ZMESH_CAMPAIGN": job.key.campaign_id,
            "ZMESH_ACTIVITY": job.key.activity,
            "ZMESH_ATTEMPT": str(job.key.attempt),
            "ZMESH_INPUTS": os.pathsep.join(str(p) for p in prepared.inputs),
        }
        for i, p in enumerate(prepared.inputs):
            env[f"ZMESH_INPUT_{i}"] = str(p)
        script = ""
        body = spec.WhichOneof("body")
        if body == "shell":
            script = spec.shell.script_uri
        elif body == "python":
            script = spec.python.script_uri
        elif body == "workflow":
            script = spec.workflow.wf_uri
        if script:
            staged_script = await self.stage(job, script, working, emit, role="script")
            env["ZMESH_SCRIPT"] = str(_in_dir(staged_script, working))
        prepared.env = env
        prepared.spec = spec
        if body in ("python", "workflow"):
            source = spec.python if body == "python" else spec.workflow
            if any(OUTPUT_REF_PREFIX in arg for arg in source.args):
                new = common_pb2.ActivitySpec()
                new.CopyFrom(spec)
                target = new.python if body == "python" else new.workflow
                args = [await self._subst(job, a, prepared, emit) for a in target.args]
                del target.args[:]
                target.args.extend(args)
                prepared.spec = new
        return prepared

    async def _subst(self, job: Job, arg: str, prepared: Prepared, emit: Emit) -> str:
        """Replace an output reference inside an argument by its local (staged) path."""
        if OUTPUT_REF_PREFIX not in arg:
            return arg
        head, _, ref = arg.partition(OUTPUT_REF_PREFIX)
        name, _, sub = ref.partition("/")
        into = prepared.working_dir / "inputs"
        local = await self.stage(job, OUTPUT_REF_PREFIX + name, into, emit, _safe(name))
        return head + str(local / sub if sub else local)

    def _resolve_dirs(self, work_text: str, out_text: str) -> tuple[Path, Path]:
        """Working and output dir of an activity, escapes expanded (memoized)."""
        found = self._dirs.get((work_text, out_text))
        if found is not None:
            return found
        agent_dir = self.data_dir
        working = expand_escapes(work_text, agentdir=agent_dir)
        if not working.is_absolute():
            working = agent_dir / working
        output = expand_escapes(out_text, agentdir=agent_dir, workingdir=working)
        if not output.is_absolute():
            output = working / output
        if len(self._dirs) > 10_000:
            self._dirs.clear()
        self._dirs[(work_text, out_text)] = (working, output)
        return working, output

    def _make_dirs(
        self, dirs: list[tuple[str, Path, tuple[int, int] | None, bool]]
    ) -> list[tuple[int, int] | None]:
        """In a worker thread: check each ``(what, path, checked, made)`` directory is
        inside the sandbox, create it unless ``made``, and check it again (a symlink
        swapped in meanwhile); each one's identity for the cache (None: not checked)."""
        idents = []
        for what, path, checked, made in dirs:
            ident = self._check_inside(what, path, checked)
            if not made:
                path.mkdir(parents=True, exist_ok=True)
                ident = self._check_inside(what, path, None)
            idents.append(ident)
        return idents

    def _check_inside(
        self, what: str, path: Path, checked: tuple[int, int] | None
    ) -> tuple[int, int] | None:
        """Refuse a directory outside @agentdir and the exported roots (symlinks resolved).

        A directory already ``checked`` (its device and inode then) is re-validated by
        one ``stat``: if any component was swapped for a symlink meanwhile, the inode
        differs and the full check runs. Returns the identity to remember (None when
        the directory does not exist yet). Blocking: call it off the event loop.
        """
        try:
            st = os.stat(path)
            ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            ident = None
        if ident is not None and checked == ident:
            return ident
        check_path_text(str(path))
        try:
            self.data.sandbox.root_of(Path(os.path.realpath(path)))
        except NotPermitted:
            raise NotPermitted(
                f"{what} {str(path)!r} is outside the agent directory and exported roots"
            ) from None
        return ident

    def _local_path(self, uri: str) -> Path | None:
        """The local path of ``uri`` if the data is on this agent, else None.

        ``NAME://path`` naming this agent goes through the sandbox, exactly as if
        another agent had asked for it (NotPermitted outside @agentdir and the roots);
        ``file://`` paths are the activity's own local paths.
        """
        parsed = parse_uri(uri)
        if parsed.scheme == "file":
            return expand_escapes(parsed.path, agentdir=self.data_dir)
        if parsed.scheme == "agent" and parsed.agent == self.name:
            return self.data.sandbox.resolve(parsed.path)
        return None

    def _existing_local_path(self, uri: str) -> Path | None:
        """:meth:`_local_path`, which must exist (NotFound); blocking (a worker thread)."""
        local = self._local_path(uri)
        if local is not None and not local.exists():
            raise NotFound(f"input {uri} does not exist on {self.name}")
        return local

    async def stage(
        self, job: Job, uri: str, into: Path, emit: Emit, name: str = "", *, role: str = "input"
    ) -> Path:
        """Make ``uri`` available locally (as ``into/name`` if fetched); returns the path.

        The input, its size and sha256 are recorded on ``job.inputs`` (``role``:
        ``input``, ``script`` or ``source``) for the attempt's final event.
        """
        ref = uri
        uri = self._resolve_ref(job, uri)
        local = await asyncio.to_thread(self._existing_local_path, uri)
        if local is not None:
            await self._record_local(job, ref, uri, local, role)
            return local
        parsed = parse_uri(uri)
        if parsed.scheme != "agent" or not parsed.agent:
            raise InvalidInput(f"cannot stage {uri!r}")
        await asyncio.to_thread(into.mkdir, parents=True, exist_ok=True)
        dest = into / (name or Path(parsed.path).name or "data")
        await emit("STAGING", f"fetching {uri}", {"uri": uri})
        started = self.clock.monotonic()
        result = await self.fetch(parsed.agent, parsed.path, dest)
        seconds = max(self.clock.monotonic() - started, 1e-6)
        detail = {
            "uri": uri,
            "bytes": str(result.bytes),
            "rate_mib_s": f"{result.bytes / seconds / 2**20:.1f}",
            "method": result.method,
            "streams": str(result.streams),
            "sent_twice": str(result.sent_twice),
        }
        if result.fallback_from:
            detail["fallback_from"] = result.fallback_from
        if result.info is not None:
            detail["size"] = str(result.info.size)
            detail["sha256"] = result.info.sha256
        await emit("STAGING", f"staged {uri} ({result.bytes} bytes via {result.method})", detail)
        job.inputs.append(_record(ref, uri, dest, result.info, role))
        return dest

    async def _record_local(self, job: Job, ref: str, uri: str, path: Path, role: str) -> None:
        """Record an input used in place (its digest from the catalog, hashed if new)."""
        catalog = self.data.catalog
        info = await asyncio.to_thread(local_info, catalog, path)
        job.inputs.append(_record(ref, uri, path, info, role))

    async def transfer(self, job: Job, prepared: Prepared, emit: Emit) -> Outcome:
        """A TransferActivity: this agent (the destination) pulls from the source.

        ``dest`` works like ``cp``: when it ends with ``/`` or names an existing
        directory, the data lands inside it under the source's basename (the
        producing activity's name for ``@output:<name>``); otherwise it lands at
        exactly the path named (missing parents are created). Both ends must be
        inside this agent's sandbox (@agentdir or an exported root) when local.
        """
        spec = job.item.tender.spec.transfer
        source = self._resolve_ref(job, spec.source)
        dest = parse_uri(spec.dest)
        if dest.scheme != "agent" or dest.agent != self.name:
            raise InvalidInput(f"transfer destination {spec.dest!r} is not on {self.name}")
        target, name = transfer_target(self.data_dir, spec.dest, dest.path, spec.source)
        sandbox = self.data.sandbox

        def make_target() -> Path | None:  # blocking: in a worker thread
            sandbox.root_of(Path(os.path.realpath(target)))  # NotPermitted outside it
            target.mkdir(parents=True, exist_ok=True)
            return self._local_path(source)

        local = await asyncio.to_thread(make_target)
        if local is not None:  # same agent: a copy, not a no-op
            real = await asyncio.to_thread(sandbox.resolve, str(local))
            await self._record_local(job, spec.source, source, real, "source")
            staged = await self._copy_local(source, real, target / name, emit)
        else:
            staged = await self.stage(job, spec.source, target, emit, name, role="source")
        return Outcome(
            "SUCCEEDED",
            message=f"transferred {source} to {spec.dest}",
            detail={"output_dir": str(target), "path": str(staged)},
        )

    async def _copy_local(self, uri: str, src: Path, dest: Path, emit: Emit) -> Path:
        """Copy local ``src`` to ``dest`` (a transfer within one agent)."""
        if await asyncio.to_thread(os.path.realpath, dest) == str(src):
            return dest
        await emit("STAGING", f"copying {uri}", {"uri": uri})
        started = self.clock.monotonic()
        n = await asyncio.to_thread(_copy, src, dest)
        seconds = max(self.clock.monotonic() - started, 1e-6)
        detail = {"uri": uri, "bytes": str(n), "method": "local-copy"}
        detail["rate_mib_s"] = f"{n / seconds / 2**20:.1f}"
        await emit("STAGING", f"copied {uri} ({n} bytes)", detail)
        return dest


def _record(ref: str, uri: str, path: Path, info: ObjectInfo | None, role: str) -> dict[str, str]:
    rec = input_record(uri, path, info, role)
    if ref != uri:
        rec["ref"] = ref
    return rec


def transfer_target(
    agent_dir: Path, dest_uri: str, dest_path: str, source: str
) -> tuple[Path, str]:
    """``(directory, name)`` a transfer writes to: ``cp`` semantics for ``dest``.

    ``NAME://dir/`` or an existing directory: inside it, under the source's basename;
    anything else: the path named itself (``NAME://copy/input.bin`` is that file).
    """
    path = Path(dest_path)
    if not path.is_absolute():
        path = agent_dir / path
    if dest_uri.endswith("/") or path.is_dir() or not path.name:
        return path, _input_name(source, set())
    return path.parent, path.name


def _copy(src: Path, dest: Path) -> int:
    """Copy a file or a directory tree (regular files only); returns bytes copied."""
    if src.is_file():
        shutil.copy2(src, dest)
        return src.stat().st_size
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore_dangling_symlinks=True)
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())


def _in_dir(script: Path, working: Path) -> Path:
    """Make a script that lives elsewhere on this agent reachable as ``./name`` in the
    working dir (a symlink), so ``cmd="./script.sh"`` works as in the paper's Fig. 3."""
    if script.parent == working or not script.is_file():
        return script
    link = working / script.name
    if link.is_symlink() or not link.exists():
        if link.is_symlink():
            link.unlink()
        link.symlink_to(script)
        return link
    return script


def _input_name(uri: str, used: set[str]) -> str:
    """A distinct local name for a staged input: the producing activity, else the basename."""
    if uri.startswith(OUTPUT_REF_PREFIX):
        name, _, sub = uri[len(OUTPUT_REF_PREFIX) :].partition("/")
        base = _safe(Path(sub).name if sub else name)
    else:
        base = _safe(Path(uri.split("://", 1)[-1]).name or "data")
    candidate, i = base, 1
    while candidate in used:
        i += 1
        candidate = f"{base}-{i}"
    used.add(candidate)
    return candidate


def run_scopes(mesh: str, job: Job) -> tuple[str, str]:
    """``(owner scope, campaign scope)`` of a job: its default dirs' parents, relative
    to ``@agentdir/runs``.

    The owner scope is ``<owner>/<monitor>`` (``<owner>`` from
    :func:`~zambeze_mesh.security.owners.owner_dir`); the campaign scope is
    ``<owner>/<monitor>/<campaign>``. The monitor level keeps an award that claims
    someone else's campaign (or owner) apart from the real one.
    """
    owner = wire_owner(mesh, job.monitor, job.item.tender.owner)
    scope = f"{owner_dir(owner)}/{_component(job.monitor)}"
    return scope, f"{scope}/{_component(job.key.campaign_id)}"


def _component(name: str) -> str:
    """``name`` as one path component (never ``.`` or ``..``, never a ``/``)."""
    safe = _safe(name)
    return safe if safe.strip(".") else f"_{safe}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _same(path: Path, ident: tuple[int, int]) -> bool:
    """Whether ``path`` is still the directory with ``ident`` (device, inode): one stat."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ident
