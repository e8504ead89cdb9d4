"""The activities a scientist puts in a campaign (the paper's Fig. 3).

Every activity takes the shared keyword parameters of :class:`Activity`; the
subclasses add what their kind needs. Arguments are validated on construction
(:class:`~zambeze_mesh.errors.InvalidInput` with a message naming the activity)
and turned into the wire form by :meth:`Activity.to_spec`.

``act.output_dir`` is an :class:`~zambeze_mesh.campaign.refs.OutputRef`
(``"@output:<name>"``), so it can be passed as another activity's input; the
directory the user configured is kept in ``act.output_dir_spec``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cloudpickle

from zambeze_mesh.campaign.futures import ActivityFuture
from zambeze_mesh.campaign.refs import MAX_FUNCTION_BYTES, MAX_RETRIES, OutputRef, check_name
from zambeze_mesh.errors import FailedPrecondition, InvalidInput
from zambeze_mesh.provenance.params import function_info
from zambeze_mesh.v1 import common_pb2

__all__ = [
    "Activity",
    "PythonActivity",
    "Requirements",
    "ShellActivity",
    "TransferActivity",
    "WFActivity",
    "parse_memory",
]

_MEM_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?\s*", re.IGNORECASE)
_MEM_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_memory(value: int | str) -> int:
    """Bytes from ``4096``, ``"512MiB"`` (binary, ``Ki/Mi/Gi``) or ``"4GB"`` (decimal)."""
    if isinstance(value, bool):
        raise InvalidInput(f"memory must be bytes or a size like '4GiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput(f"memory must be >= 0, got {value}")
        return value
    m = _MEM_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidInput(f"memory must be bytes or a size like '4GiB' or '512MB', got {value!r}")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** _MEM_POWER[m.group(2).lower()])


@dataclass(frozen=True)
class Requirements:
    """Labels and resources the activity's contractor must offer.

    ``memory`` is bytes or a size string (``"16GiB"``); every label must match
    one of the agent's labels (``{"facility": "olcf"}``).
    """

    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: int = 0
    memory: int | str = 0
    gpus: int = 0

    @classmethod
    def coerce(cls, value: Requirements | Mapping[str, Any] | None) -> Requirements:
        """Accept a :class:`Requirements`, a dict with the same keys, or None."""
        if value is None:
            return cls()
        if isinstance(value, Requirements):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInput(f"requires must be a dict or Requirements, got {value!r}")
        known = {"labels", "cpus", "memory", "memory_bytes", "gpus"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise InvalidInput(
                f"unknown requires keys {unknown}; use {sorted(known - {'memory_bytes'})}"
            )
        memory = value.get("memory", value.get("memory_bytes", 0))
        return cls(
            labels=dict(value.get("labels") or {}),
            cpus=value.get("cpus", 0),
            memory=memory,
            gpus=value.get("gpus", 0),
        )

    def to_proto(self) -> common_pb2.Requirements:
        """The wire form (validates counts and labels)."""
        for what, n in (("cpus", self.cpus), ("gpus", self.gpus)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise InvalidInput(f"requires.{what} must be an integer >= 0, got {n!r}")
        labels = _str_map(self.labels, "requires.labels")
        return common_pb2.Requirements(
            labels=labels, cpus=self.cpus, memory_bytes=parse_memory(self.memory), gpus=self.gpus
        )


def _str_map(value: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a dict of strings, got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise InvalidInput(f"{what} keys must be non-empty strings, got {k!r}")
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise InvalidInput(f"{what}[{k!r}] must be a string, got {type(v).__name__}")
        out[k] = str(v)
    return out


def _as_uri(value: object, what: str) -> str:
    """A data URI from a string, an activity (its output dir) or an activity future."""
    if isinstance(value, Activity):
        return value.output_dir
    if isinstance(value, ActivityFuture):
        return OutputRef(value.activity_name)
    if isinstance(value, str):
        if not value:
            raise InvalidInput(f"{what} is empty")
        return value
    raise InvalidInput(f"{what} must be a URI string or an activity, got {type(value).__name__}")


def _dep_name(value: object) -> str:
    if isinstance(value, Activity):
        return value.name
    if isinstance(value, ActivityFuture):
        return value.activity_name
    if isinstance(value, OutputRef):
        return value.activity
    if isinstance(value, str):
        return check_name(value, "depends_on entry")
    raise InvalidInput(
        f"depends_on entries must be activity names, activities or futures, got {value!r}"
    )


class Activity:
    """Base of every activity; holds the parameters all kinds share.

    Args:
        name: unique within the campaign; letters, digits, ``_``, ``.``, ``-`` and
            spaces (not at either end).
        data_uris: inputs: ``NAME://path``, ``file://path``, another activity's
            ``output_dir`` (or the activity / its future itself).
        working_dir: where it runs (default
            ``@agentdir/runs/<owner>/<monitor>/<campaign>/<activity>``).
        output_dir: where its outputs go (default ``@workingdir/output``).
        depends_on: activities (names, objects or futures) that must succeed first.
        agent: pin the activity to this agent.
        requires: a :class:`Requirements` or a dict ``labels/cpus/memory/gpus``.
        timeout: seconds before the run is killed (None = no limit).
        retries: extra attempts after a failure.
        plugin: run with this plugin instead of the kind's default.
    """

    kind: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        *,
        data_uris: Iterable[str | Activity | ActivityFuture] = (),
        working_dir: str = "",
        output_dir: str = "",
        depends_on: Iterable[str | Activity | ActivityFuture] = (),
        agent: str | None = None,
        requires: Requirements | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retries: int = 0,
        plugin: str | None = None,
    ) -> None:
        self.name = check_name(name)
        try:
            if isinstance(data_uris, str | bytes) or isinstance(depends_on, str | bytes):
                raise InvalidInput("data_uris and depends_on must be lists, not a single string")
            self.data_uris: list[str] = [
                _as_uri(u, f"data_uris[{i}]") for i, u in enumerate(data_uris)
            ]
            self.depends_on: list[str] = list(dict.fromkeys(_dep_name(d) for d in depends_on))
            for what, value in (("working_dir", working_dir), ("output_dir", output_dir)):
                if not isinstance(value, str):
                    raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
            self.working_dir = working_dir
            self.output_dir_spec = output_dir
            self.agent = check_name(agent, "agent") if agent is not None else None
            self.plugin = check_name(plugin, "plugin") if plugin is not None else None
            self.requires = Requirements.coerce(requires)
            self.requires.to_proto()  # validate now
            self.timeout = _check_timeout(timeout)
            if isinstance(retries, bool) or not isinstance(retries, int):
                raise InvalidInput(f"retries must be an integer, got {retries!r}")
            if not 0 <= retries <= MAX_RETRIES:
                raise InvalidInput(f"retries must be between 0 and {MAX_RETRIES}, got {retries}")
            self.retries = retries
        except InvalidInput as exc:
            raise InvalidInput(f"activity {name!r}: {exc}") from None
        self._future: ActivityFuture | None = None

    # -- references -------------------------------------------------------
    @property
    def output_dir(self) -> OutputRef:
        """A reference to this activity's output dir (``"@output:<name>"``) for use as input."""
        return OutputRef(self.name)

    def output(self, subpath: str = "") -> OutputRef:
        """A reference to ``subpath`` inside this activity's output dir."""
        return OutputRef(self.name, subpath)

    @property
    def future(self) -> ActivityFuture:
        """The future of this activity's outcome (exists once added to a campaign)."""
        if self._future is None:
            raise FailedPrecondition(
                f"activity {self.name!r} has no future yet: add it to a campaign first"
            )
        return self._future

    @property
    def is_function(self) -> bool:
        """True for a PythonActivity that ships a function."""
        return False

    def _bind(self, future: ActivityFuture) -> None:
        if self._future is not None and self._future is not future:
            raise InvalidInput(f"activity {self.name!r} already belongs to another campaign")
        self._future = future

    # -- wire form ---------------------------------------------------------
    def to_spec(self) -> common_pb2.ActivitySpec:
        """The ``ActivitySpec`` sent to the mesh."""
        spec = common_pb2.ActivitySpec(
            name=self.name,
            data_uris=self.data_uris,
            working_dir=self.working_dir,
            output_dir=self.output_dir_spec,
            depends_on=self.depends_on,
            agent=self.agent or "",
            requires=self.requires.to_proto(),
            timeout_s=self.timeout or 0.0,
            retries=self.retries,
            plugin=self.plugin or "",
        )
        self._fill(spec)
        return spec

    def _fill(self, spec: common_pb2.ActivitySpec) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidInput(f"timeout must be seconds (a number), got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise InvalidInput(f"timeout must be a positive finite number of seconds, got {timeout}")
    return float(timeout)


def _opt_uri(value: object, what: str) -> str:
    return "" if value is None else _as_uri(value, what)


def _str_args(args: Sequence[Any], what: str) -> list[str]:
    if isinstance(args, str | bytes):
        raise InvalidInput(f"{what} must be a list, not a single string")
    out: list[str] = []
    for i, a in enumerate(args):
        if isinstance(a, bool) or not isinstance(a, str | int | float):
            raise InvalidInput(f"{what}[{i}] must be a string or a number, got {type(a).__name__}")
        out.append(str(a))
    return out


class ShellActivity(Activity):
    """A shell command run with ``/bin/sh -c`` in the working dir.

    ``script_uri`` (optional) is fetched into the working dir first; at least one
    of ``cmd`` and ``script_uri`` is needed.
    """

    kind = "shell"

    def __init__(
        self,
        name: str,
        cmd: str = "",
        script_uri: str | None = None,
        env: Mapping[str, str | int | float] | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(name, **shared)
        try:
            if not isinstance(cmd, str):
                raise InvalidInput(f"cmd must be a string, got {type(cmd).__name__}")
            self.cmd = cmd
            self.script_uri = _opt_uri(script_uri, "script_uri")
            if not cmd and not self.script_uri:
                raise InvalidInput("a shell activity needs cmd or script_uri")
            self.env = _str_map(env, "env")
        except InvalidInput as exc:
            raise InvalidInput(f"activity {name!r}: {exc}") from None

    def _fill(self, spec: common_pb2.ActivitySpec) -> None:
        spec.shell.CopyFrom(
            common_pb2.ShellSpec(cmd=self.cmd, script_uri=self.script_uri, env=self.env)
        )


class PythonActivity(Activity):
    """A Python script (``script_uri`` + string ``args``) or a shipped function.

    With ``func``, the call ``(func, args, kwargs)`` is serialized with cloudpickle;
    the activity's future then resolves to the function's return value. Functions
    defined in ``__main__`` (a script, a notebook) are pickled by value; functions
    from other modules by reference, so their module must be importable where
    they run.
    """

    kind = "python"

    def __init__(
        self,
        name: str,
        script_uri: str | None = None,
        args: Sequence[Any] = (),
        func: Callable[..., Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        env: Mapping[str, str | int | float] | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(name, **shared)
        try:
            if (script_uri is None) == (func is None):
                raise InvalidInput("a python activity needs exactly one of script_uri or func")
            self.env = _str_map(env, "env")
            self.func = func
            self.script_uri = ""
            self.args: list[str] = []
            self.function = b""
            self._function_info: tuple[str, str, dict[str, str]] = ("", "", {})
            if func is not None:
                self.function = _pickle_call(func, args, kwargs)
                self._function_info = function_info(func, args, kwargs)
            else:
                if kwargs:
                    raise InvalidInput("kwargs are only for func; pass script arguments in args")
                self.script_uri = _as_uri(script_uri, "script_uri")
                self.args = _str_args(args, "args")
        except InvalidInput as exc:
            raise InvalidInput(f"activity {name!r}: {exc}") from None

    @property
    def is_function(self) -> bool:
        return bool(self.function)

    def _fill(self, spec: common_pb2.ActivitySpec) -> None:
        spec.python.CopyFrom(
            common_pb2.PythonSpec(
                script_uri=self.script_uri,
                args=self.args,
                function=self.function,
                env=self.env,
                function_name=self._function_info[0],
                function_source=self._function_info[1],
                function_params=self._function_info[2],
            )
        )


def _pickle_call(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any] | None
) -> bytes:
    if not callable(func):
        raise InvalidInput(f"func must be callable, got {type(func).__name__}")
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise InvalidInput("args must be a list or tuple of the function's arguments")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise InvalidInput("kwargs must be a dict")
    try:
        blob: bytes = cloudpickle.dumps((func, tuple(args), dict(kwargs or {})))
    except Exception as exc:
        raise InvalidInput(f"cannot serialize the function call with cloudpickle: {exc}") from None
    if len(blob) > MAX_FUNCTION_BYTES:
        raise InvalidInput(
            f"the pickled function call is {len(blob)} bytes; the limit is {MAX_FUNCTION_BYTES} "
            "(ship big data through data_uris instead)"
        )
    return blob


class WFActivity(Activity):
    """A workflow run by a workflow manager (``"dask"`` or ``"parsl"``).

    ``wf_config`` is a JSON-serializable dict handed to the manager.
    """

    kind = "workflow"

    def __init__(
        self,
        name: str,
        wf_manager: str,
        wf_uri: str,
        wf_config: Mapping[str, Any] | None = None,
        args: Sequence[Any] = (),
        **shared: Any,
    ) -> None:
        super().__init__(name, **shared)
        try:
            if not isinstance(wf_manager, str):
                raise InvalidInput(
                    f"wf_manager must be a string such as 'dask' or 'parsl', "
                    f"got {type(wf_manager).__name__}"
                )
            self.wf_manager = check_name(wf_manager, "wf_manager")
            self.wf_uri = _as_uri(wf_uri, "wf_uri")
            if wf_config is not None and not isinstance(wf_config, Mapping):
                raise InvalidInput(f"wf_config must be a dict, got {type(wf_config).__name__}")
            self.wf_config = dict(wf_config or {})
            try:
                self.wf_config_json = json.dumps(self.wf_config) if wf_config is not None else ""
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"wf_config is not JSON-serializable: {exc}") from None
            self.args = _str_args(args, "args")
        except InvalidInput as exc:
            raise InvalidInput(f"activity {name!r}: {exc}") from None

    def _fill(self, spec: common_pb2.ActivitySpec) -> None:
        spec.workflow.CopyFrom(
            common_pb2.WorkflowSpec(
                wf_manager=self.wf_manager,
                wf_uri=self.wf_uri,
                wf_config_json=self.wf_config_json,
                args=self.args,
            )
        )


class TransferActivity(Activity):
    """Move ``source`` (``NAME://path`` or an output reference) to ``dest`` (``NAME://path``).

    The destination agent pulls the data from the source (third-party transfer).
    ``dest`` works like ``cp``: ``"C://repo/"`` (a trailing ``/``) or an existing
    directory receives the data inside it under the source's name;
    ``"C://copy/input.bin"`` is the exact path the data gets (parents are created).
    """

    kind = "transfer"

    def __init__(
        self, name: str, source: str | Activity | ActivityFuture, dest: str, **shared: Any
    ) -> None:
        super().__init__(name, **shared)
        try:
            self.source = _as_uri(source, "source")
            if not isinstance(dest, str) or not dest:
                raise InvalidInput(f"dest must be a non-empty URI string, got {dest!r}")
            self.dest = dest
        except InvalidInput as exc:
            raise InvalidInput(f"activity {name!r}: {exc}") from None

    def _fill(self, spec: common_pb2.ActivitySpec) -> None:
        spec.transfer.CopyFrom(common_pb2.TransferSpec(source=self.source, dest=self.dest))
