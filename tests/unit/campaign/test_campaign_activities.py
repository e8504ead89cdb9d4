"""Spec building and validation of the activity classes (no server)."""

from __future__ import annotations

import json
from typing import Any

import cloudpickle
import pytest

import zambeze_mesh as zm
from zambeze_mesh.campaign.activities import Requirements, parse_memory
from zambeze_mesh.campaign.refs import OutputRef
from zambeze_mesh.errors import FailedPrecondition, InvalidInput


def scale(x: int, factor: int = 2) -> int:
    return x * factor


def fig3() -> tuple[Any, Any, Any, Any]:
    act_1 = zm.ShellActivity(
        name="create_microscope_images",
        script_uri="edge://mscope_sim.sh",
        cmd="./mscope_sim.sh",
        output_dir="@agentdir/images",
    )
    act_2 = zm.WFActivity(
        name="train_ml_models",
        wf_manager="dask",
        wf_config={"n_workers": 4, "threads_per_worker": 1},
        wf_uri="hpc://train.py",
        data_uris=[act_1.output_dir, "edge://calibration.json"],
        working_dir="@agentdir/tmp",
        output_dir="@workingdir/models",
    )
    act_3 = zm.PythonActivity(
        name="model_validation",
        data_uris=[act_2.output_dir],
        script_uri="cluster://mod_select.py",
        args=["-metric", "loss"],
        output_dir="@agentdir/models",
    )
    act_4 = zm.TransferActivity(
        name="store", source=act_3.output_dir, dest="repository://user/repository"
    )
    return act_1, act_2, act_3, act_4


def test_fig3_specs_land_in_the_right_fields() -> None:
    a1, a2, a3, a4 = fig3()
    s1 = a1.to_spec()
    assert s1.WhichOneof("body") == "shell"
    assert (s1.shell.cmd, s1.shell.script_uri) == ("./mscope_sim.sh", "edge://mscope_sim.sh")
    assert s1.output_dir == "@agentdir/images"

    s2 = a2.to_spec()
    assert s2.WhichOneof("body") == "workflow"
    assert s2.workflow.wf_manager == "dask" and s2.workflow.wf_uri == "hpc://train.py"
    assert json.loads(s2.workflow.wf_config_json) == {"n_workers": 4, "threads_per_worker": 1}
    assert list(s2.data_uris) == ["@output:create_microscope_images", "edge://calibration.json"]
    assert (s2.working_dir, s2.output_dir) == ("@agentdir/tmp", "@workingdir/models")

    s3 = a3.to_spec()
    assert s3.WhichOneof("body") == "python"
    assert s3.python.script_uri == "cluster://mod_select.py"
    assert list(s3.python.args) == ["-metric", "loss"] and s3.python.function == b""
    assert list(s3.data_uris) == ["@output:train_ml_models"]

    s4 = a4.to_spec()
    assert s4.WhichOneof("body") == "transfer"
    assert (s4.transfer.source, s4.transfer.dest) == (
        "@output:model_validation",
        "repository://user/repository",
    )
    # Defaults: no pin, no timeout, no retries.
    assert (s4.agent, s4.timeout_s, s4.retries, s4.plugin) == ("", 0.0, 0, "")


def test_output_ref_is_a_string_reference() -> None:
    a1, *_ = fig3()
    ref = a1.output_dir
    assert isinstance(ref, OutputRef) and isinstance(ref, str)
    assert ref == "@output:create_microscope_images"
    assert ref.activity == "create_microscope_images" and ref.subpath == ""
    assert a1.output_dir_spec == "@agentdir/images"
    assert ref / "frames" == "@output:create_microscope_images/frames"
    assert (ref / "a") / "b.tif" == "@output:create_microscope_images/a/b.tif"
    assert a1.output("frames/") == "@output:create_microscope_images/frames"
    assert "output dir of activity 'create_microscope_images'" in repr(ref)
    assert cloudpickle.loads(cloudpickle.dumps(ref / "x")).subpath == "x"
    with pytest.raises(InvalidInput, match=r"'\.\.'"):
        _ = ref / "../etc"


def test_shared_params_and_requirements() -> None:
    act = zm.ShellActivity(
        "run",
        cmd="echo hi",
        env={"OMP_NUM_THREADS": 4},
        agent="hpc-login",
        requires={"labels": {"facility": "olcf"}, "cpus": 8, "memory": "16GiB", "gpus": 1},
        timeout=90,
        retries=2,
        plugin="batch",
    )
    s = act.to_spec()
    assert dict(s.shell.env) == {"OMP_NUM_THREADS": "4"}
    assert s.agent == "hpc-login" and s.plugin == "batch"
    assert dict(s.requires.labels) == {"facility": "olcf"}
    assert (s.requires.cpus, s.requires.memory_bytes, s.requires.gpus) == (8, 16 * 2**30, 1)
    assert (s.timeout_s, s.retries) == (90.0, 2)
    r = Requirements(cpus=2, memory=4096)
    assert zm.ShellActivity("r", cmd="x", requires=r).to_spec().requires.memory_bytes == 4096


@pytest.mark.parametrize(
    ("text", "expected"),
    [(1024, 1024), ("4GiB", 4 * 2**30), ("512MB", 512_000_000), ("2k", 2000), ("1.5Gi", 3 * 2**29)],
)
def test_parse_memory(text: int | str, expected: int) -> None:
    assert parse_memory(text) == expected


def test_depends_on_accepts_names_objects_and_futures() -> None:
    a = zm.ShellActivity("a", cmd="true")
    b = zm.ShellActivity("b", cmd="true")
    camp = zm.Campaign("deps")
    camp.add_activities([a, b])
    c = zm.ShellActivity("c", cmd="true", depends_on=[a, b.future, "a"])
    assert list(c.to_spec().depends_on) == ["a", "b"]
    d = zm.PythonActivity("d", func=scale, args=(1,), data_uris=[a, b.future])
    assert list(d.to_spec().data_uris) == ["@output:a", "@output:b"]


def test_function_is_cloudpickled_with_args_and_kwargs() -> None:
    act = zm.PythonActivity("f", func=scale, args=[21], kwargs={"factor": 3}, env={"A": "1"})
    spec = act.to_spec()
    assert spec.python.script_uri == "" and list(spec.python.args) == []
    func, args, kwargs = cloudpickle.loads(spec.python.function)
    assert func(*args, **kwargs) == 63
    assert act.is_function
    # A lambda (pickled by value) round-trips as well.
    lam = zm.PythonActivity("g", func=lambda x: x + 1, args=(1,)).to_spec()
    f2, a2, k2 = cloudpickle.loads(lam.python.function)
    assert f2(*a2, **k2) == 2


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: zm.ShellActivity("", cmd="x"), "empty"),
        (lambda: zm.ShellActivity("a/b", cmd="x"), "try 'a_b'"),
        (lambda: zm.ShellActivity("__monitor__", cmd="x"), "invalid"),
        (lambda: zm.ShellActivity("s"), "needs cmd or script_uri"),
        (lambda: zm.PythonActivity("p"), "exactly one of script_uri or func"),
        (lambda: zm.PythonActivity("p", script_uri="a://x.py", func=scale), "exactly one"),
        (lambda: zm.PythonActivity("p", func=42), "callable"),  # type: ignore[arg-type]
        (lambda: zm.PythonActivity("p", script_uri="a://x.py", args=[object()]), "args\\[0\\]"),
        (lambda: zm.PythonActivity("p", script_uri="a://x.py", kwargs={"a": 1}), "kwargs"),
        (lambda: zm.WFActivity("w", wf_manager=3, wf_uri="a://w.py"), "wf_manager must be a str"),  # type: ignore[arg-type]
        (lambda: zm.WFActivity("w", "dask", "a://w", wf_config={"x": object()}), "JSON"),
        (lambda: zm.WFActivity("w", "dask", "a://w", wf_config=[1]), "must be a dict"),  # type: ignore[arg-type]
        (lambda: zm.TransferActivity("t", source="a://x", dest=""), "dest"),
        (lambda: zm.ShellActivity("s", cmd="x", timeout=-1), "timeout"),
        (lambda: zm.ShellActivity("s", cmd="x", retries=99), "retries"),
        (lambda: zm.ShellActivity("s", cmd="x", data_uris="a://x"), "lists"),
        (lambda: zm.ShellActivity("s", cmd="x", data_uris=[""]), "empty"),
        (lambda: zm.ShellActivity("s", cmd="x", depends_on=["bad/name"]), "depends_on"),
        (lambda: zm.ShellActivity("s", cmd="x", requires={"ram": 1}), "unknown requires"),
        (lambda: zm.ShellActivity("s", cmd="x", requires={"memory": "lots"}), "memory"),
        (lambda: zm.ShellActivity("s", cmd="x", requires={"cpus": -1}), "cpus"),
        (lambda: zm.ShellActivity("s", cmd="x", agent="no such/agent"), "agent"),
        (lambda: zm.ShellActivity("s", cmd="x", env={"A": None}), "env"),  # type: ignore[dict-item]
    ],
)
def test_validation_errors(build: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        build()


def test_campaign_checks_names_and_binding() -> None:
    camp = zm.Campaign("c")
    a = zm.ShellActivity("a", cmd="true")
    with pytest.raises(FailedPrecondition, match="add it to a campaign"):
        _ = a.future
    camp.add_activities([a])
    assert a.future.activity_name == "a" and not a.future.done()
    with pytest.raises(InvalidInput, match="already used"):
        camp.add_activity(zm.ShellActivity("a", cmd="false"))
    with pytest.raises(InvalidInput, match="already used"):
        zm.Campaign("d").add_activities(
            [zm.ShellActivity("x", cmd="1"), zm.ShellActivity("x", cmd="2")]
        )
    with pytest.raises(InvalidInput, match="belongs to a campaign"):
        zm.Campaign("e").add_activity(a)
    with pytest.raises(InvalidInput, match="non-empty name"):
        zm.Campaign("  ")
    assert a.future.cancel() is False
    assert camp.poll() == {"a": "PENDING"}
    with pytest.raises(FailedPrecondition, match="not been dispatched"):
        camp.wait(0.1)


def test_client_rules_match_the_monitor() -> None:
    from zambeze_mesh.campaign import refs
    from zambeze_mesh.scheduling import model

    for const in ("MAX_NAME", "MAX_RETRIES", "MAX_FUNCTION_BYTES", "MONITOR", "OUTPUT_REF_PREFIX"):
        assert getattr(refs, const) == getattr(model, const), const
    for name in ("a", "a.b-c_d", "A" * 128, "A" * 129, "", ".", "..", "a b", "__monitor__", "é"):
        assert refs.valid_name(name) == model.valid_name(name), name
