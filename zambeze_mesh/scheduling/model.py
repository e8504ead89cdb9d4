"""Library-level scheduling model: activities, agents, and output references.

Wire types (``common_pb2``) stay at the edge: :func:`activity_from_spec` and
:func:`agent_from_record` validate and convert them into the plain dataclasses the
DAG, the matcher and the contract net work with.

Output references
-----------------
A value of the form ``@output:<activity>`` optionally followed by ``/subpath`` names
the output dir of another activity of the same campaign (resolved by the monitor at
award time) and creates a DAG edge. Whole-value references are recognised in
``data_uris``, ``script_uri`` (shell and python), ``wf_uri`` and ``transfer.source``;
inside ``python.args`` and ``workflow.args`` a reference may also be embedded in a
longer argument (``--input=@output:sim/frames``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from zambeze_mesh.data.uris import parse_uri, split_escape
from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.membership.status import MemberStatus
from zambeze_mesh.v1 import common_pb2

Kind = Literal["shell", "python", "workflow", "transfer"]
KINDS: tuple[str, ...] = ("shell", "python", "workflow", "transfer")

MAX_NAME = 128
MAX_PATH = 4096
MAX_DATA_URIS = 256
MAX_ARGS = 1024
MAX_ENV = 256
MAX_LABELS = 64
MAX_DEPENDS_ON = 10_000
MAX_RETRIES = 10
MAX_FUNCTION_BYTES = 16 * 1024 * 1024
MAX_CONFIG_JSON = 1024 * 1024
MAX_CMD = 64 * 1024

#: Reserved node name of the campaign's monitor in the DAG.
MONITOR = "__monitor__"

OUTPUT_REF_PREFIX = "@output:"
#: Activity names: 1-128 characters of letters, digits, ``_ . -`` and inner spaces (the
#: paper's names, e.g. "create microscope images", are valid).
NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_. \-]{0,126}[A-Za-z0-9_.\-])?")
_NAME_CHARS = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
# An embedded reference: not preceded by a name character, ends at '/' or a non-name char.
_EMBEDDED_REF_RE = re.compile(r"(?<![A-Za-z0-9_.\-])@output:(" + _NAME_CHARS + r")")

_DEFAULT_PLUGIN = {"shell": "shell", "python": "python", "transfer": "transfer"}


TOKEN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


def valid_token(name: str) -> bool:
    """Agent, plugin and workflow-manager names: ``[A-Za-z0-9_.-]``, no spaces."""
    return bool(TOKEN_RE.fullmatch(name)) and name not in (".", "..")


def valid_name(name: str) -> bool:
    """True for 1-128 characters of ``[A-Za-z0-9_.-]`` and inner spaces."""
    return bool(NAME_RE.fullmatch(name)) and name != MONITOR and name not in (".", "..")


def parse_output_ref(value: str) -> tuple[str, str] | None:
    """Split ``@output:<name>[/subpath]`` into ``(name, subpath)``; None if not a reference.

    Raises :class:`InvalidInput` for a value that starts like a reference but names
    no valid activity.
    """
    if not value.startswith(OUTPUT_REF_PREFIX):
        return None
    rest = value[len(OUTPUT_REF_PREFIX) :]
    name, _, sub = rest.partition("/")
    if not valid_name(name):
        raise InvalidInput(f"bad output reference {value[:200]!r}: {name[:140]!r} is no name")
    return name, sub


@dataclass(frozen=True)
class Requirements:
    """Labels and resources an activity needs from its contractor."""

    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: int = 0
    memory_bytes: int = 0
    gpus: int = 0


@dataclass(frozen=True, eq=False)
class ActivityDef:
    """One activity of a campaign, as the scheduler sees it.

    ``plugin`` defaults from ``kind`` (shell, python, transfer; a workflow's
    ``wf_manager``). ``spec`` is the original ``common_pb2.ActivitySpec`` when the
    activity came from the wire (opaque here, passed on in tenders).
    """

    name: str
    kind: Kind
    plugin: str = ""
    data_uris: tuple[str, ...] = ()
    working_dir: str = ""
    output_dir: str = ""
    depends_on: tuple[str, ...] = ()
    agent: str = ""
    requires: Requirements = field(default_factory=Requirements)
    timeout_s: float = 0.0
    retries: int = 0
    spec: common_pb2.ActivitySpec | None = None
    is_function: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInput(f"activity {self.name!r}: unknown kind {self.kind!r}")
        object.__setattr__(self, "data_uris", tuple(self.data_uris))
        object.__setattr__(self, "depends_on", tuple(self.depends_on))
        if not self.plugin:
            plugin = _DEFAULT_PLUGIN.get(self.kind, "")
            if self.kind == "workflow" and self.spec is not None:
                plugin = self.spec.workflow.wf_manager
            if not plugin:
                raise InvalidInput(f"activity {self.name!r}: workflow activity needs a plugin")
            object.__setattr__(self, "plugin", plugin)


@dataclass(frozen=True, eq=False)
class AgentInfo:
    """What the scheduler knows about one mesh member (from its gossiped record).

    ``status`` is a :class:`~zambeze_mesh.membership.status.MemberStatus` (a string
    such as ``"ALIVE"`` or ``"MEMBER_STATUS_ALIVE"`` is parsed into one).
    """

    name: str
    status: MemberStatus = MemberStatus.ALIVE
    plugins: frozenset[str] = frozenset()
    cpus: int = 0
    memory_bytes: int = 0
    gpus: int = 0
    slots: int = 1
    free_slots: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    transfer_methods: tuple[str, ...] = ()
    accept_functions: bool = False
    address: str = ""
    scheduler: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugins", frozenset(self.plugins))
        object.__setattr__(self, "transfer_methods", tuple(self.transfer_methods))
        object.__setattr__(self, "status", normalize_status(self.status))


def normalize_status(status: str) -> MemberStatus:
    """``"alive"`` / ``"ALIVE"`` / ``"MEMBER_STATUS_ALIVE"`` -> ``MemberStatus.ALIVE``."""
    return MemberStatus.parse(status)


def agent_from_record(record: common_pb2.AgentRecord, status: str) -> AgentInfo:
    """Convert a (verified) ``AgentRecord`` plus the local liveness view to :class:`AgentInfo`."""
    caps = record.capabilities
    return AgentInfo(
        name=record.name,
        status=normalize_status(status),
        plugins=frozenset(caps.plugins),
        cpus=caps.cpus,
        memory_bytes=caps.memory_bytes,
        gpus=caps.gpus,
        slots=caps.slots,
        free_slots=caps.free_slots,
        labels=dict(caps.labels),
        transfer_methods=tuple(caps.transfer_methods),
        accept_functions=caps.accept_functions,
        address=record.address,
        scheduler=caps.scheduler,
    )


# ---------------------------------------------------------------------------
# Validation helpers


def _bad(activity: str, msg: str) -> InvalidInput:
    return InvalidInput(f"activity {activity!r}: {msg}")


def _check_str(activity: str, what: str, value: str, limit: int = MAX_PATH) -> None:
    if len(value) > limit:
        raise _bad(activity, f"{what} is longer than {limit} characters")
    if "\x00" in value:
        raise _bad(activity, f"{what} contains a NUL character")


def _check_list(activity: str, what: str, values: Iterable[str], limit: int) -> list[str]:
    items = list(values)
    if len(items) > limit:
        raise _bad(activity, f"too many {what} ({len(items)} > {limit})")
    for i, v in enumerate(items):
        _check_str(activity, f"{what}[{i}]", v)
    return items


def _check_map(activity: str, what: str, values: Mapping[str, str], limit: int) -> None:
    if len(values) > limit:
        raise _bad(activity, f"too many {what} ({len(values)} > {limit})")
    for k, v in values.items():
        if not k:
            raise _bad(activity, f"{what} has an empty key")
        _check_str(activity, f"{what} key", k, MAX_NAME)
        _check_str(activity, f"{what}[{k}]", v)


def _check_ref(activity: str, what: str, value: str) -> None:
    """An ``@output:`` reference (no ``..`` in its subpath) or any other data URI."""
    try:
        ref = parse_output_ref(value)
        if ref is not None:
            if ".." in PurePosixPath(ref[1]).parts:
                raise InvalidInput(f"'..' is not allowed in {value[:200]!r}")
        elif value:
            parse_uri(value)  # NUL, '..', unknown escapes, not a URI at all
    except InvalidInput as exc:
        raise _bad(activity, f"{what}: {exc}") from None


def _check_dir(activity: str, what: str, value: str) -> None:
    """working_dir/output_dir: a known leading escape and no ``..`` component.

    Where it may lie (@agentdir or an exported root) is checked by the contractor.
    """
    _check_str(activity, what, value)
    try:
        split_escape(value)
    except InvalidInput as exc:
        raise _bad(activity, f"{what}: {exc}") from None
    if ".." in PurePosixPath(value).parts:
        raise _bad(activity, f"{what}: '..' is not allowed in {value[:200]!r}")


def _validate_body(name: str, spec: common_pb2.ActivitySpec, function_elided: bool = False) -> Kind:
    body = spec.WhichOneof("body")
    if body is None:
        raise _bad(name, "no body (shell, python, workflow or transfer) is set")
    if body == "shell":
        sh = spec.shell
        if not sh.cmd and not sh.script_uri:
            raise _bad(name, "shell activity needs cmd or script_uri")
        _check_str(name, "cmd", sh.cmd, MAX_CMD)
        _check_str(name, "script_uri", sh.script_uri)
        _check_ref(name, "script_uri", sh.script_uri)
        _check_map(name, "env", sh.env, MAX_ENV)
        return "shell"
    if body == "python":
        py = spec.python
        if bool(py.script_uri) == (bool(py.function) or function_elided):
            raise _bad(name, "python activity needs exactly one of script_uri or function")
        if len(py.function) > MAX_FUNCTION_BYTES:
            raise _bad(name, f"function is larger than {MAX_FUNCTION_BYTES} bytes")
        _check_str(name, "script_uri", py.script_uri)
        _check_ref(name, "script_uri", py.script_uri)
        _check_list(name, "args", py.args, MAX_ARGS)
        _check_map(name, "env", py.env, MAX_ENV)
        return "python"
    if body == "workflow":
        wf = spec.workflow
        if not valid_token(wf.wf_manager):
            raise _bad(name, f"bad wf_manager {wf.wf_manager[:140]!r}")
        _check_str(name, "wf_uri", wf.wf_uri)
        _check_ref(name, "wf_uri", wf.wf_uri)
        _check_list(name, "args", wf.args, MAX_ARGS)
        if len(wf.wf_config_json) > MAX_CONFIG_JSON:
            raise _bad(name, f"wf_config_json is larger than {MAX_CONFIG_JSON} bytes")
        if wf.wf_config_json:
            try:
                cfg = json.loads(wf.wf_config_json)
            except ValueError as exc:
                raise _bad(name, f"wf_config_json is not JSON: {exc}") from None
            if not isinstance(cfg, dict):
                raise _bad(name, "wf_config_json must be a JSON object")
        return "workflow"
    tr = spec.transfer
    if not tr.source or not tr.dest:
        raise _bad(name, "transfer activity needs source and dest")
    _check_str(name, "source", tr.source)
    _check_str(name, "dest", tr.dest)
    _check_ref(name, "source", tr.source)
    _check_ref(name, "dest", tr.dest)
    return "transfer"


def activity_from_spec(
    spec: common_pb2.ActivitySpec, *, function_elided: bool = False
) -> ActivityDef:
    """Validate an ``ActivitySpec`` and convert it to an :class:`ActivityDef`.

    ``function_elided``: the shipped function was left out of ``spec`` (a call for
    proposals carries only its size); the activity is still a function activity.

    Raises :class:`InvalidInput` (naming the activity) for any malformed or
    out-of-bounds field. Duplicate names and unknown references are checked by
    :class:`~zambeze_mesh.scheduling.dag.CampaignDag`.
    """
    name = spec.name
    if not valid_name(name):
        shown = name[:MAX_NAME] + ("..." if len(name) > MAX_NAME else "")
        raise InvalidInput(
            f"activity name {shown!r} is invalid: use 1-{MAX_NAME} characters of "
            f"letters, digits, '_', '.', '-' and spaces (not at either end; not {MONITOR!r})"
        )
    kind = _validate_body(name, spec, function_elided)
    data_uris = _check_list(name, "data_uris", spec.data_uris, MAX_DATA_URIS)
    for i, uri in enumerate(data_uris):
        if not uri:
            raise _bad(name, f"data_uris[{i}] is empty")
        _check_ref(name, f"data_uris[{i}]", uri)
    _check_dir(name, "working_dir", spec.working_dir)
    _check_dir(name, "output_dir", spec.output_dir)
    depends_on = list(spec.depends_on)
    if len(depends_on) > MAX_DEPENDS_ON:
        raise _bad(name, f"too many depends_on ({len(depends_on)} > {MAX_DEPENDS_ON})")
    for dep in depends_on:
        if not valid_name(dep):
            raise _bad(name, f"depends_on names an invalid activity {dep[:140]!r}")
    if spec.agent and not valid_token(spec.agent):
        raise _bad(name, f"bad agent pin {spec.agent[:140]!r}")
    if spec.plugin and not valid_token(spec.plugin):
        raise _bad(name, f"bad plugin name {spec.plugin[:140]!r}")
    if not math.isfinite(spec.timeout_s) or spec.timeout_s < 0:
        raise _bad(name, f"timeout_s must be a finite number >= 0, got {spec.timeout_s}")
    if spec.retries > MAX_RETRIES:
        raise _bad(name, f"retries must be <= {MAX_RETRIES}, got {spec.retries}")
    req = spec.requires
    _check_map(name, "requires.labels", req.labels, MAX_LABELS)
    if kind == "python":
        _check_function_info(name, spec.python)
    return ActivityDef(
        name=name,
        kind=kind,
        plugin=spec.plugin,
        data_uris=tuple(data_uris),
        working_dir=spec.working_dir,
        output_dir=spec.output_dir,
        depends_on=tuple(dict.fromkeys(depends_on)),
        agent=spec.agent,
        requires=Requirements(
            labels=dict(req.labels),
            cpus=req.cpus,
            memory_bytes=req.memory_bytes,
            gpus=req.gpus,
        ),
        timeout_s=spec.timeout_s,
        retries=spec.retries,
        spec=spec,
        is_function=kind == "python" and (bool(spec.python.function) or function_elided),
    )


def _check_function_info(name: str, py: common_pb2.PythonSpec) -> None:
    """Bounds of the provenance-only fields of a shipped function."""
    if len(py.function_name) > 1024:
        raise _bad(name, "function_name is longer than 1 KiB")
    if len(py.function_source) > 64 * 1024:
        raise _bad(name, "function_source is longer than 64 KiB")
    if len(py.function_params) > 64:
        raise _bad(name, "function_params has more than 64 entries")
    for k, v in py.function_params.items():
        if len(k) > 256 or len(v) > 1024:
            raise _bad(name, "function_params keys must be <= 256 and values <= 1024 characters")


def _whole_ref(value: str) -> str | None:
    try:
        ref = parse_output_ref(value)
    except InvalidInput:
        return None
    return ref[0] if ref else None


def output_refs(activity: ActivityDef) -> set[str]:
    """Names of the activities whose output ``activity`` uses (see module docs)."""
    values: list[str] = list(activity.data_uris)
    args: list[str] = []
    spec = activity.spec
    if spec is not None:
        body = spec.WhichOneof("body")
        if body == "shell":
            values.append(spec.shell.script_uri)
        elif body == "python":
            values.append(spec.python.script_uri)
            args.extend(spec.python.args)
        elif body == "workflow":
            values.append(spec.workflow.wf_uri)
            args.extend(spec.workflow.args)
        elif body == "transfer":
            values.append(spec.transfer.source)
    refs = {n for n in map(_whole_ref, values) if n}
    for arg in args:
        refs.update(m.group(1) for m in _EMBEDDED_REF_RE.finditer(arg) if valid_name(m.group(1)))
    return refs


def match_key(
    spec: common_pb2.ActivitySpec, *, function_elided: bool = False
) -> tuple[object, ...]:
    """What decides where an activity may run and what a contractor bids on it.

    Two specs with the same key fit exactly the same agents (pin, plugin, kind,
    shipped function or not, transfer destination, requirements, inputs), so a
    contractor can bid on a burst of look-alike tenders by parsing one of them.
    """
    body = spec.WhichOneof("body")
    return (
        body,
        spec.plugin,
        spec.agent,
        body == "python" and (bool(spec.python.function) or function_elided),
        spec.transfer.dest if body == "transfer" else "",
        spec.requires.SerializeToString(deterministic=True),
        tuple(spec.data_uris),
    )


def transfer_dest_agent(activity: ActivityDef) -> str | None:
    """The agent a transfer must run on (its destination ``NAME://path``), if named."""
    if activity.kind != "transfer" or activity.spec is None:
        return None
    scheme, sep, _ = activity.spec.transfer.dest.partition("://")
    if not sep or scheme == "file" or not valid_token(scheme):
        return None
    return scheme
