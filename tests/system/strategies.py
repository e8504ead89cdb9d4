"""Hypothesis strategies for random and malformed ``zambeze_mesh.v1`` messages.

:func:`messages` builds any protobuf message from its descriptor: every field may be
set or not, strings mix plain text with hostile values (traversal, NUL bytes, absolute
paths, over-long text, URIs), integers span the whole range of their type, enums
take unknown values, bytes are random, repeated fields and maps get a few entries and
nested messages recurse a few levels. ``overrides`` pins fields (by full name, e.g.
``"zambeze_mesh.v1.ShellSpec.cmd"``) to a strategy of their own, so that a fuzzer
never makes the agent run an arbitrary command or dial an address off this host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

__all__ = ["HOSTILE_TEXT", "SAFE_CMDS", "hostile_text", "messages", "safe_overrides"]

HOSTILE_TEXT = [
    "",
    ".",
    "..",
    "../../etc/passwd",
    "../x",
    "a/../../b",
    "agent://../x",
    "a://../../x",
    "a:///etc/passwd",
    "a://@agentdir/../x",
    "/etc/passwd",
    "/dev/zero",
    "/proc/self/environ",
    "file:///etc/shadow",
    "file://../x",
    "@agentdir/../../x",
    "@workingdir/../x",
    "@nowhere/x",
    "@output:",
    "@output:x/../../y",
    "@output:../x",
    "a\x00b",
    "\x00",
    "x" * 300,
    "x/" * 2100,
    "é\u202e\ufeff",
    "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    "a",
    "b",
    "f.txt",
    "d",
    "d/in.txt",
]
"""Strings every text field is likely to see."""

SAFE_CMDS = ["true", "exit 3", "echo fuzz", "sleep 0.05", ""]
"""The only shell commands a fuzzer may submit (the agent runs accepted ones)."""

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

Overrides = Mapping[str, st.SearchStrategy[Any]]


def hostile_text(extra: list[str] | None = None) -> st.SearchStrategy[str]:
    """Plain text, hostile paths/URIs (plus ``extra``, e.g. paths beside the agent)."""
    return st.one_of(
        st.sampled_from(HOSTILE_TEXT + (extra or [])),
        st.text(max_size=24),
        st.sampled_from([1000, 4096, 4097, 5000]).map(lambda n: "y" * n),
    )


def safe_overrides(
    extra_text: list[str] | None = None, names: list[str] | None = None
) -> dict[str, st.SearchStrategy[Any]]:
    """Pins for fields whose random values would be unsafe or useless.

    Commands come from :data:`SAFE_CMDS`; shipped functions are never valid pickles;
    addresses an agent might dial stay on 127.0.0.1; ``from``/``monitor``/
    ``contractor`` claims are often a real agent name (``names``) so that requests
    get past the caller check and reach the service.
    """
    who = st.one_of(st.sampled_from(names or ["a"]), hostile_text(extra_text))
    local_addr = st.sampled_from(["", "127.0.0.1:1", "[::1]:1", "garbage", "127.0.0.1:99999"])
    p = "zambeze_mesh.v1."
    return {
        p + "ShellSpec.cmd": st.sampled_from(SAFE_CMDS),
        p + "PythonSpec.function": st.binary(max_size=64).map(lambda b: b"\xff" + b if b else b),
        p + "PingReqRequest.target_address": local_addr,
        p + "AgentRecord.address": local_addr,
        p + "AgentRecord.admission_address": local_addr,
        p + "JoinRequest.advertise": local_addr,
        p + "JoinRequest.admission_advertise": local_addr,
        p + "GossipRequest.from": who,
        p + "SyncRequest.from": who,
        p + "PingRequest.from": who,
        p + "PingReqRequest.from": who,
        p + "CallForProposalsRequest.monitor": who,
        p + "AwardRequest.monitor": who,
        p + "AwardItem.monitor": who,
        p + "ReportStatusRequest.contractor": who,
        p + "CancelActivitiesRequest.monitor": who,
        p + "WorkflowSpec.wf_config_json": st.sampled_from(["", "{}", "[]", "{", '{"a": 1}']),
    }


def _scalar(field: FieldDescriptor, text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return text
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if t == FieldDescriptor.TYPE_ENUM:
        return st.one_of(
            st.sampled_from([v.number for v in field.enum_type.values]),  # type: ignore[union-attr]
            st.integers(-(2**31), 2**31 - 1),
        )
    lo, hi = _INT_RANGES[t]
    return st.one_of(st.integers(lo, hi), st.sampled_from([0, 1, lo, hi]))


def _field(
    field: FieldDescriptor, depth: int, text: st.SearchStrategy[str], overrides: Overrides
) -> st.SearchStrategy[Any]:
    if field.full_name in overrides:
        one = overrides[field.full_name]
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        one = _message(field.message_type, depth + 1, text, overrides)  # type: ignore[arg-type]
    else:
        one = _scalar(field, text)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_f = field.message_type.fields_by_name["key"]
        val_f = field.message_type.fields_by_name["value"]
        return st.dictionaries(
            _field(key_f, depth, text, overrides),
            _field(val_f, depth, text, overrides),
            max_size=3 if depth == 0 else 1,
        )
    if _repeated(field):
        return st.lists(one, max_size=3 if depth == 0 else 1)
    return one


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(getattr(field, "label", 0) == FieldDescriptor.LABEL_REPEATED)


def _message(
    desc: Descriptor, depth: int, text: st.SearchStrategy[str], overrides: Overrides
) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(desc)
    if depth > 2:
        return st.just(cls())
    plain: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if f.containing_oneof is None:
            plain[f.name] = _field(f, depth, text, overrides)
    oneofs = [
        st.one_of(
            st.none(),
            *(st.tuples(st.just(f.name), _field(f, depth, text, overrides)) for f in o.fields),
        )
        for o in desc.oneofs
    ]

    def build(args: tuple[dict[str, Any], list[tuple[str, Any] | None]]) -> Message:
        values, chosen = args
        msg = cls()
        for name, value in [*values.items(), *(c for c in chosen if c is not None)]:
            _assign(msg, desc.fields_by_name[name], value)
        return msg

    return st.tuples(st.fixed_dictionaries({}, optional=plain), st.tuples(*oneofs).map(list)).map(
        build
    )


def _assign(msg: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(msg, field.name)
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, Message):
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif isinstance(value, list):
        target.extend(value)
    elif isinstance(value, Message):
        target.CopyFrom(value)
    else:
        setattr(msg, field.name, value)


def messages(
    cls: type[Message],
    *,
    extra_text: list[str] | None = None,
    overrides: Overrides | None = None,
) -> st.SearchStrategy[Message]:
    """Random instances of ``cls`` (see the module docstring)."""
    desc: Any = cls.DESCRIPTOR
    return _message(desc, 0, hostile_text(extra_text), overrides or {})


@st.composite
def submit_requests(
    draw: st.DrawFn,
    extra_text: list[str] | None = None,
    names: list[str] | None = None,
) -> Message:
    """``SubmitRequest`` messages that often pass validation: random activity fields on
    top of valid names and a safe shell body, plus wholly random ones."""
    from zambeze_mesh.v1 import campaigns_pb2, common_pb2

    overrides = safe_overrides(extra_text, names)
    if draw(st.booleans()):
        return draw(
            messages(campaigns_pb2.SubmitRequest, extra_text=extra_text, overrides=overrides)
        )
    req = campaigns_pb2.SubmitRequest(name=draw(st.sampled_from(["c", "fuzz", "x" * 257, ""])))
    n = draw(st.integers(1, 3))
    for i in range(n):
        spec: Any = draw(
            messages(common_pb2.ActivitySpec, extra_text=extra_text, overrides=overrides)
        )
        spec.name = f"a{i}"
        if spec.WhichOneof("body") is None or draw(st.booleans()):
            spec.shell.CopyFrom(common_pb2.ShellSpec(cmd=draw(st.sampled_from(SAFE_CMDS[:4]))))
        if draw(st.booleans()):
            del spec.depends_on[:]
            spec.agent = draw(st.sampled_from(["", *(names or [])]))
            spec.plugin = ""
            spec.ClearField("requires")
        req.activities.append(spec)
    return req
