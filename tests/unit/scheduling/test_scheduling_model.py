"""Activity/agent conversion, validation, output references and states."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from zambeze_mesh.errors import FailedPrecondition, InvalidInput
from zambeze_mesh.membership.status import MemberStatus
from zambeze_mesh.scheduling import states as st
from zambeze_mesh.scheduling.model import (
    ActivityDef,
    activity_from_spec,
    agent_from_record,
    output_refs,
    parse_output_ref,
    transfer_dest_agent,
)
from zambeze_mesh.v1 import common_pb2


def shell(name: str = "a", **kw: Any) -> common_pb2.ActivitySpec:
    return common_pb2.ActivitySpec(name=name, shell=common_pb2.ShellSpec(cmd="true"), **kw)


def test_shell_spec_converts_with_defaults() -> None:
    spec = shell(
        "build",
        data_uris=["B://in.dat"],
        depends_on=["x", "x", "y"],
        agent="hpc1",
        requires=common_pb2.Requirements(labels={"role": "hpc"}, cpus=4, memory_bytes=1 << 30),
        timeout_s=5.5,
        retries=2,
    )
    act = activity_from_spec(spec)
    assert act.name == "build" and act.kind == "shell" and act.plugin == "shell"
    assert act.data_uris == ("B://in.dat",)
    assert act.depends_on == ("x", "y")  # deduplicated, order kept
    assert act.agent == "hpc1"
    assert act.requires.labels == {"role": "hpc"} and act.requires.cpus == 4
    assert act.timeout_s == 5.5 and act.retries == 2
    assert act.spec is spec and not act.is_function


def test_plugin_derivation() -> None:
    wf = common_pb2.ActivitySpec(
        name="w", workflow=common_pb2.WorkflowSpec(wf_manager="dask", wf_uri="A://wf.py")
    )
    assert activity_from_spec(wf).plugin == "dask"
    py = common_pb2.ActivitySpec(name="p", python=common_pb2.PythonSpec(function=b"x"))
    act = activity_from_spec(py)
    assert act.plugin == "python" and act.is_function
    tr = common_pb2.ActivitySpec(
        name="t", transfer=common_pb2.TransferSpec(source="A://x", dest="B://y")
    )
    assert activity_from_spec(tr).plugin == "transfer"
    explicit = shell("s", plugin="batch")
    assert activity_from_spec(explicit).plugin == "batch"
    with pytest.raises(InvalidInput, match="needs a plugin"):
        ActivityDef(name="w", kind="workflow")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (shell(""), "name"),
        (shell("x" * 129), "name"),
        (shell("a/b"), "name"),
        (shell("__monitor__"), "name"),
        (common_pb2.ActivitySpec(name="nobody"), "'nobody'.*no body"),
        (common_pb2.ActivitySpec(name="e", shell=common_pb2.ShellSpec()), "'e'.*cmd"),
        (shell("t", timeout_s=-1), "'t'.*timeout"),
        (shell("t", timeout_s=float("nan")), "'t'.*timeout"),
        (shell("r", retries=11), "'r'.*retries"),
        (shell("d", data_uris=["A://x"] * 257), "'d'.*too many data_uris"),
        (shell("d", data_uris=[""]), "'d'.*empty"),
        (shell("p", working_dir="/" + "x" * 4096), "'p'.*working_dir.*longer"),
        (shell("p", output_dir="a\x00b"), "'p'.*NUL"),
        (shell("g", agent="bad agent"), "'g'.*agent pin"),
        (shell("o", data_uris=["@output:"]), "'o'.*output reference"),
        (shell("o", depends_on=["bad/name"]), "'o'.*depends_on"),
        (
            common_pb2.ActivitySpec(
                name="py", python=common_pb2.PythonSpec(script_uri="A://s.py", function=b"f")
            ),
            "'py'.*exactly one",
        ),
        (
            common_pb2.ActivitySpec(name="w", workflow=common_pb2.WorkflowSpec(wf_manager="")),
            "'w'.*wf_manager",
        ),
        (
            common_pb2.ActivitySpec(
                name="w", workflow=common_pb2.WorkflowSpec(wf_manager="dask", wf_config_json="[1]")
            ),
            "'w'.*JSON object",
        ),
        (
            common_pb2.ActivitySpec(name="t", transfer=common_pb2.TransferSpec(source="A://x")),
            "'t'.*source and dest",
        ),
    ],
)
def test_invalid_specs_are_rejected(spec: common_pb2.ActivitySpec, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        activity_from_spec(spec)


def test_output_refs_scan_all_fields() -> None:
    py = common_pb2.ActivitySpec(
        name="p",
        python=common_pb2.PythonSpec(
            script_uri="@output:gen/script.py",
            args=["--in=@output:sim/frames", "plain", "x@output:no"],
        ),
        data_uris=["@output:raw", "B://not/a/ref"],
    )
    assert output_refs(activity_from_spec(py)) == {"gen", "sim", "raw"}
    wf = common_pb2.ActivitySpec(
        name="w",
        workflow=common_pb2.WorkflowSpec(
            wf_manager="parsl", wf_uri="@output:a", args=["@output:b"]
        ),
    )
    assert output_refs(activity_from_spec(wf)) == {"a", "b"}
    tr = common_pb2.ActivitySpec(
        name="t", transfer=common_pb2.TransferSpec(source="@output:a/x", dest="C://y")
    )
    assert output_refs(activity_from_spec(tr)) == {"a"}
    sh = common_pb2.ActivitySpec(name="s", shell=common_pb2.ShellSpec(script_uri="@output:k"))
    assert output_refs(activity_from_spec(sh)) == {"k"}
    assert parse_output_ref("@output:a/b/c") == ("a", "b/c")
    assert parse_output_ref("A://x") is None


def test_transfer_dest_agent() -> None:
    tr = activity_from_spec(
        common_pb2.ActivitySpec(
            name="t", transfer=common_pb2.TransferSpec(source="A://x", dest="B://y")
        )
    )
    assert transfer_dest_agent(tr) == "B"
    local = activity_from_spec(
        common_pb2.ActivitySpec(
            name="t", transfer=common_pb2.TransferSpec(source="A://x", dest="file:///y")
        )
    )
    assert transfer_dest_agent(local) is None


def test_agent_from_record() -> None:
    rec = common_pb2.AgentRecord(
        name="hpc1",
        address="127.0.0.1:7000",
        capabilities=common_pb2.Capabilities(
            plugins=["shell", "dask"],
            cpus=8,
            memory_bytes=16 << 30,
            gpus=1,
            slots=4,
            free_slots=3,
            labels={"role": "hpc"},
            transfer_methods=["grpc-stream"],
            accept_functions=True,
            scheduler="slurm",
        ),
    )
    info = agent_from_record(rec, "alive")
    assert info.name == "hpc1" and info.status == MemberStatus.ALIVE
    assert info.plugins == frozenset({"shell", "dask"})
    assert (info.cpus, info.gpus, info.slots, info.free_slots) == (8, 1, 4, 3)
    assert info.labels == {"role": "hpc"} and info.accept_functions
    assert info.transfer_methods == ("grpc-stream",) and info.scheduler == "slurm"
    assert agent_from_record(rec, "MEMBER_STATUS_DEAD").status == MemberStatus.DEAD


def test_state_transitions() -> None:
    path = [st.PENDING, st.READY, st.BIDDING, st.AWARDED, st.STAGING, st.RUNNING, st.SUCCEEDED]
    for old, new in itertools.pairwise(path):
        st.check_transition(old, new)
    st.check_transition(st.AWARDED, st.RUNNING)  # nothing to stage
    st.check_transition(st.STAGING, st.QUEUED)
    st.check_transition(st.RUNNING, st.RETRYING)
    st.check_transition(st.RETRYING, st.READY)
    st.check_transition(st.PENDING, st.SKIPPED)
    for bad in [
        (st.RUNNING, st.STAGING),
        (st.SUCCEEDED, st.RUNNING),
        (st.PENDING, st.RUNNING),
        (st.SKIPPED, st.READY),
        (st.RUNNING, st.RUNNING),
    ]:
        with pytest.raises(st.IllegalTransition):
            st.check_transition(*bad)
    assert issubclass(st.IllegalTransition, FailedPrecondition)
    with pytest.raises(InvalidInput):
        st.check_transition("BOGUS", st.READY)
    for term in st.TERMINAL:
        assert st.allowed_transitions(term) == frozenset()


def test_state_proto_mapping_round_trips() -> None:
    for s in st.STATES:
        value = st.to_proto(s)
        assert common_pb2.ActivityState.Name(value) == "ACTIVITY_STATE_" + s
        assert st.from_proto(value) == s
    with pytest.raises(InvalidInput):
        st.from_proto(common_pb2.ACTIVITY_STATE_UNSPECIFIED)
    with pytest.raises(InvalidInput):
        st.from_proto(999)


def test_paper_activity_names_are_valid() -> None:
    from zambeze_mesh.campaign.refs import valid_name as client_rule
    from zambeze_mesh.scheduling.model import valid_name, valid_token

    for name in ("create microscope images", "train ml models", "Model validation"):
        assert valid_name(name) and client_rule(name)
    for bad in (" lead", "trail ", "a/b", "", "x" * 129):
        assert not valid_name(bad) and not client_rule(bad)
    assert not valid_token("two words")


def test_match_key_ignores_names_and_payloads_but_not_placement_fields() -> None:
    from zambeze_mesh.scheduling.model import match_key

    def fn(name: str, blob: bytes = b"x", **kw: object) -> common_pb2.ActivitySpec:
        return common_pb2.ActivitySpec(
            name=name,
            python=common_pb2.PythonSpec(function=blob),
            **kw,  # type: ignore[arg-type]
        )

    base = match_key(fn("a"))
    assert match_key(fn("b", b"other function")) == base
    assert match_key(common_pb2.ActivitySpec(name="s", shell=common_pb2.ShellSpec(cmd="x"))) != base
    assert match_key(fn("a", agent="agent-1")) != base
    assert match_key(fn("a", plugin="python2")) != base
    assert match_key(fn("a", data_uris=["B://x"])) != base
    labelled = fn("a")
    labelled.requires.labels["gpu"] = "a100"
    assert match_key(labelled) != base
    script = common_pb2.ActivitySpec(name="a", python=common_pb2.PythonSpec(script_uri="s.py"))
    assert match_key(script) != base
