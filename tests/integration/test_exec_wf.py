"""WFActivity on real Dask and Parsl, through a mesh of in-process agents."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from tests.helpers.inproc import mesh
from tests.integration.test_campaigns_e2e import by_name, submit_and_watch
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc, common_pb2

S = common_pb2
pytest.importorskip("distributed")
pytest.importorskip("parsl")

DASK_SCRIPT = """
import json, sys
import zambeze_mesh.wf as zwf

def chunk_sum(bounds):
    lo, hi = bounds
    return sum(i * i for i in range(lo, hi))

cfg = zwf.config()
n, chunks = cfg["n"], cfg["chunks"]
step = n // chunks
bounds = [(i * step, n if i == chunks - 1 else (i + 1) * step) for i in range(chunks)]
with zwf.dask_client() as client:
    futures = client.map(chunk_sum, bounds)
    parts = client.gather(futures)
    workers = len(client.scheduler_info()["workers"])
total = sum(parts)
(zwf.output_dir() / "sum.json").write_text(
    json.dumps({"total": total, "parts": len(parts), "workers": workers})
)
print("total", total)
"""

DASK_FAILING = """
import zambeze_mesh.wf as zwf

def boom(x):
    if x == 3:
        raise ValueError(f"chunk {x} is cursed")
    return x

with zwf.dask_client() as client:
    print(client.gather(client.map(boom, range(5))))
"""

PARSL_SCRIPT = """
import json, sys
from parsl import python_app
import zambeze_mesh.wf as zwf

@python_app
def square(x):
    return x * x

futures = [square(i) for i in range(zwf.config()["n"])]
total = sum(f.result() for f in futures)
(zwf.output_dir() / "parsl.json").write_text(json.dumps({"total": total, "argv": sys.argv[1:]}))
"""


def wf(name: str, manager: str, script: Path | str, config: object = None, **kw: object):
    cfg = config if isinstance(config, str) else json.dumps(config or {})
    uri = f"file://{script}" if isinstance(script, Path) else script
    return S.ActivitySpec(
        name=name,
        workflow=S.WorkflowSpec(wf_manager=manager, wf_uri=uri, wf_config_json=cfg),
        **kw,
    )


@pytest.mark.slow
async def test_dask_and_parsl_campaign(tmp_path: Path) -> None:
    dask_py = tmp_path / "dask_sum.py"
    dask_py.write_text(DASK_SCRIPT)
    parsl_py = tmp_path / "parsl_sum.py"
    parsl_py.write_text(PARSL_SCRIPT)
    bad_py = tmp_path / "dask_bad.py"
    bad_py.write_text(DASK_FAILING)
    n = 20_000
    async with mesh(tmp_path, 2, configure=lambda i: {"slots": 2}) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            acts = [
                wf("dsum", "dask", dask_py, {"n": n, "chunks": 8}, agent="agent-1"),
                wf("psum", "parsl", parsl_py, {"n": 10}),
            ]
            acts[1].workflow.args.append("hello")
            status, events = await submit_and_watch(stub, acts)
            assert status.state == S.CAMPAIGN_STATE_SUCCEEDED, status
            # A failing Dask task fails its activity with the traceback; the shared
            # cluster on agent-1 is reused.
            failed, fevents = await submit_and_watch(
                stub, [wf("bad", "dask", bad_py, agent="agent-1")]
            )
    acts_ = by_name(status)
    out = Path(acts_["dsum"].detail["output_dir"])
    result = json.loads((out / "sum.json").read_text())
    assert result == {"total": sum(i * i for i in range(n)), "parts": 8, "workers": 2}
    assert out.is_relative_to(agents[1].data_dir)
    presult = json.loads((Path(acts_["psum"].detail["output_dir"]) / "parsl.json").read_text())
    assert presult == {"total": sum(i * i for i in range(10)), "argv": ["hello"]}
    final = [e for e in events if e.activity == "dsum" and e.state == S.ACTIVITY_STATE_SUCCEEDED]
    assert final and final[0].detail["dask_scheduler"].startswith("tcp://127.0.0.1:")
    assert failed.state == S.CAMPAIGN_STATE_FAILED
    bad = [e for e in fevents if e.activity == "bad" and e.state == S.ACTIVITY_STATE_FAILED][-1]
    assert "ValueError: chunk 3 is cursed" in bad.detail["stderr_tail"]
    assert "Traceback" in bad.detail["stderr_tail"]
    assert "chunk 3 is cursed" in bad.message


async def test_workflow_errors_are_clear_and_agent_keeps_serving(tmp_path: Path) -> None:
    script = tmp_path / "never.py"
    script.write_text("raise SystemExit('should not run')\n")
    async with mesh(tmp_path, 1) as agents:
        async with grpc.aio.insecure_channel(f"unix:{agents[0].home.socket}") as ch:
            stub = campaigns_pb2_grpc.CampaignsStub(ch)
            # An unknown workflow manager is refused at dispatch.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Submit(
                    campaigns_pb2.SubmitRequest(name="x", activities=[wf("w", "nope", script)])
                )
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            details = err.value.details() or ""
            assert "needs plugin 'nope'" in details and "no agent" in details, details
            # wf_config that is not a JSON object is refused at dispatch too.
            for bad in ("{not json", "[1, 2]"):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Submit(
                        campaigns_pb2.SubmitRequest(
                            name="x", activities=[wf("w", "dask", script, bad)]
                        )
                    )
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "wf_config" in (err.value.details() or "")
            acts = [
                wf("badexec", "parsl", script, {"executor": "spark"}),
                wf("badprov", "parsl", script, {"provider": "kubernetes-ish"}),
                wf("nofile", "dask", tmp_path / "missing.py"),
            ]
            status, _ = await submit_and_watch(stub, acts)
            acts_ = by_name(status)
            assert status.state == S.CAMPAIGN_STATE_FAILED
            for name in acts_:
                assert acts_[name].state == S.ACTIVITY_STATE_FAILED, name
            assert "executor 'spark' is not supported" in acts_["badexec"].message
            assert "provider 'kubernetes-ish' is not supported" in acts_["badprov"].message
            assert "does not exist" in acts_["nofile"].message
            # No script ran, and the agent keeps serving.
            shell = S.ActivitySpec(name="fine", shell=S.ShellSpec(cmd="true"))
            ok, _ = await submit_and_watch(stub, [shell])
            assert ok.state == S.CAMPAIGN_STATE_SUCCEEDED
