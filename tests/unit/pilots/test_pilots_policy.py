"""The pure parts of pilots: drain policy, autoscaling decision, job description."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest

from zambeze_mesh.errors import InvalidInput
from zambeze_mesh.pilots import drain
from zambeze_mesh.pilots.scale import decide
from zambeze_mesh.pilots.spec import PilotSpec, job_id_from_env, pilot_name
from zambeze_mesh.settings.pilots import PilotPolicy


def test_may_take_only_what_finishes_before_the_margin() -> None:
    # 20 s activities, 15 s margin: 40 s left fits one more (20 + 15 <= 40).
    assert drain.may_take(40, 20, margin_s=15) is None
    assert drain.may_take(34, 20, margin_s=15) is not None
    # Queued work ahead counts: 2 queued on 1 busy slot of 2 -> 2 run times to wait.
    assert drain.may_take(100, 20, queue_len=2, free_slots=1, slots=2, margin_s=15) is None
    assert drain.may_take(60, 20, queue_len=3, free_slots=0, slots=1, margin_s=15) is not None
    # Unknown run time (0): taken until the margin itself.
    assert drain.may_take(16, 0, margin_s=15) is None
    assert drain.may_take(14, 0, margin_s=15) is not None
    # Unknown run time: no queueing beyond the free slots.
    assert drain.may_take(1000, 0, queue_len=2, free_slots=2, slots=2) is not None
    assert drain.may_take(1000, 0, queue_len=1, free_slots=2, slots=2) is None
    # A draining pilot takes nothing; an endless allocation takes everything.
    assert drain.may_take(1e6, 1, draining=True) == "pilot is draining"
    assert drain.may_take(math.inf, 1e9) is None


def test_finish_in_counts_the_queue_per_slot() -> None:
    assert drain.finish_in(10, 0, 1, 1) == 10
    assert drain.finish_in(10, 4, 0, 2) == 10 + 5 * 10 / 2


def test_hand_back_what_will_not_finish() -> None:
    running = [
        drain.Running("short", elapsed_s=15, expected_s=20),  # 5 s to go
        drain.Running("long", elapsed_s=1, expected_s=20),  # 19 s to go
        drain.Running("unknown", elapsed_s=3, expected_s=0),  # counts as due now
    ]
    assert drain.hand_back(30, running, margin_s=15) == ["long"]
    assert drain.hand_back(100, running, margin_s=15) == []
    # At the margin everything still running goes back.
    assert drain.hand_back(15, running, margin_s=15) == ["short", "long", "unknown"]
    assert drain.hand_back(math.inf, running) == []


def test_queued_work_that_would_not_finish_goes_back() -> None:
    q = ["q0", "q1", "q2", "q3"]
    # 2 slots, 20 s each, 15 s margin, 50 s left: room 35 s -> only the first round fits.
    assert drain.queued_to_hand_back(50, q, runtime_s=20, slots=2, margin_s=15) == ["q2", "q3"]
    assert drain.queued_to_hand_back(1000, q, runtime_s=20, slots=2) == []
    assert drain.queued_to_hand_back(10, q, runtime_s=0, slots=2, margin_s=15) == q
    assert drain.queued_to_hand_back(math.inf, q, runtime_s=1e9, slots=1) == []


def test_leave_reasons() -> None:
    assert drain.leave_reason(10, busy=True, idle_s=0, margin_s=15) == "walltime"
    assert drain.leave_reason(100, busy=True, idle_s=0, draining=True) is None
    assert drain.leave_reason(100, busy=False, idle_s=0, draining=True) == "drained"
    assert drain.leave_reason(100, busy=False, idle_s=61, idle_timeout_s=60) == "idle"
    assert drain.leave_reason(100, busy=False, idle_s=59, idle_timeout_s=60) is None
    assert drain.leave_reason(100, busy=False, idle_s=1e6, idle_timeout_s=0) is None
    # Idle with too little time for one more activity of the measured length: go now.
    assert drain.leave_reason(30, busy=False, idle_s=0, runtime_s=20, margin_s=15) == "walltime"
    assert drain.leave_reason(40, busy=False, idle_s=0, runtime_s=20, margin_s=15) is None


def test_policy_from_table_validates() -> None:
    p = PilotPolicy.from_table(
        {"min": 0, "max": 2, "walltime": "5", "idle_timeout": 10, "labels": {"pool": "x"}}
    )
    assert (p.max, p.idle_timeout_s, dict(p.labels)) == (2, 10.0, {"pool": "x"})
    for bad in (
        {"max": -1},
        {"min": 3, "max": 2},
        {"walltime": "soon"},
        {"idle_timeout": "x"},
        {"labels": {"a": 1}},
        {"maxx": 2},
        {"nodes": 0},
    ):
        with pytest.raises(InvalidInput):
            PilotPolicy.from_table(bad)


def test_decide_scales_with_the_backlog_up_to_max() -> None:
    p = PilotPolicy(max=2, backlog_wait_s=5)
    assert decide(p, waiting_s=[], pilots_up=0, pilots_starting=0).submit == 0
    # Waiting, but not long enough yet.
    assert decide(p, waiting_s=[1, 2], pilots_up=0, pilots_starting=0).submit == 0
    d = decide(p, waiting_s=[6, 7, 1], pilots_up=0, pilots_starting=0)
    assert d.submit == 2 and "2 activities" in d.reason
    # Never above max, counting pilots up and on their way.
    assert decide(p, waiting_s=[60], pilots_up=1, pilots_starting=0).submit == 1
    assert decide(p, waiting_s=[60], pilots_up=2, pilots_starting=0).submit == 0
    assert decide(p, waiting_s=[60], pilots_up=0, pilots_starting=1).submit == 0
    # One pilot per `per_pilot` backlog activities.
    q = PilotPolicy(max=10, backlog_wait_s=0, per_pilot=4)
    assert decide(q, waiting_s=[1] * 9, pilots_up=0, pilots_starting=0).submit == 3
    assert decide(q, waiting_s=[1] * 9, pilots_up=0, pilots_starting=2).submit == 1
    # min is kept without a backlog.
    m = PilotPolicy(min=1, max=3)
    assert decide(m, waiting_s=[], pilots_up=0, pilots_starting=0).submit == 1
    assert decide(m, waiting_s=[], pilots_up=1, pilots_starting=0).submit == 0


def test_pilot_names_and_job_ids() -> None:
    assert pilot_name("hpc", "1234") == "hpc-pilot-1234"
    assert pilot_name("hpc", "99.pbs-server") == "hpc-pilot-99.pbs-server"
    assert pilot_name("hpc", "a/b c") == "hpc-pilot-a-b-c"
    assert job_id_from_env("slurm", {"SLURM_JOB_ID": "77"}) == "77"
    assert job_id_from_env("lsf", {"LSB_JOBID": "5"}) == "5"
    assert job_id_from_env("pbs", {"PBS_JOBID": "6.server"}) == "6.server"
    assert job_id_from_env("flux", {"FLUX_JOB_ID": "f3"}) == "f3"


def test_spec_round_trips(tmp_path: Path) -> None:
    spec = PilotSpec("hpc", "h:1", "h:2", "slurm", 120.0, 2, labels={"a": "b"})
    spec.save(tmp_path / "spec.json")
    assert PilotSpec.load(tmp_path / "spec.json") == spec
    assert spec.name_prefix == "hpc-pilot-"
    assert "token" not in (tmp_path / "spec.json").read_text()


@pytest.mark.parametrize(
    ("scheduler", "needles"),
    [
        (
            "slurm",
            ["#SBATCH --time=0:2:0", "#SBATCH --nodes=2", "--ntasks-per-node=1", '="q"'],
        ),
        ("lsf", ["#BSUB -W 0:2", "#BSUB -nnodes 2", '#BSUB -q "q"']),
        ("pbs", ["#PBS -l walltime=0:2:0", "select=2:ncpus=1:mpiprocs=1", "#PBS -q q"]),
    ],
)
def test_pilot_job_scripts(tmp_path: Path, scheduler: str, needles: list[str]) -> None:
    psij = pytest.importorskip("psij")
    from zambeze_mesh.execution.batch_spec import render_submit_script
    from zambeze_mesh.pilots.spec import build_pilot_job

    spec_path = tmp_path / "spec.json"
    job = build_pilot_job(
        spec_path, nodes=2, walltime=timedelta(minutes=2), queue="q", python="/py"
    )
    executor = psij.JobExecutor.get_instance(scheduler)
    script = render_submit_script(executor, job)
    for needle in needles:
        assert needle in script, (needle, script)
    # One pilot process (PSI/J's single launcher), reading its spec by path: no secret
    # on the command line.
    assert "single_launch.sh" in script
    assert f"/py -m zambeze_mesh.agent.pilot {spec_path}" in script
    assert "ZMESH1-" not in script


def test_pilots_table_in_config_round_trips(tmp_path: Path) -> None:
    from zambeze_mesh.settings.config import AgentConfig

    table = {"max": 2, "walltime": "5", "idle_timeout": 30, "labels": {"pool": "gpu"}}
    cfg = AgentConfig(name="a", mesh="m", listen="127.0.0.1:0", scheduler="slurm", pilots=table)
    cfg.save(tmp_path / "config.toml")
    assert "[pilots]" in (tmp_path / "config.toml").read_text()
    assert AgentConfig.load(tmp_path / "config.toml").pilots == table
    with pytest.raises(InvalidInput, match="needs a scheduler"):
        AgentConfig(name="a", mesh="m", listen="127.0.0.1:0", pilots=table)
    with pytest.raises(InvalidInput, match="unknown keys in"):
        AgentConfig(name="a", mesh="m", listen="127.0.0.1:0", scheduler="slurm", pilots={"mx": 1})


def test_outputs_of_a_left_pilot_are_found_at_its_submitter() -> None:
    from zambeze_mesh.pilots.spec import returned_location, submitter_of

    assert submitter_of("hpc-login-pilot-123") == "hpc-login"
    assert submitter_of("a-pilot-of-b-pilot-7") == "a-pilot-of-b"
    assert submitter_of("laptop") is None
    labels = {"pilot": "hpc-pilot-9", "pilot_outputs": "return"}
    assert returned_location("hpc-pilot-9", "/d/x", labels) == "hpc://d/x".replace(
        "hpc://d", "hpc:///d"
    )
    # Not a pilot, another pilot's label, or outputs kept by the pilot: unchanged.
    assert returned_location("hpc-pilot-9", "/d/x", {}) is None
    assert returned_location("hpc-pilot-9", "/d/x", {**labels, "pilot": "other"}) is None
    assert returned_location("hpc-pilot-9", "/d/x", {**labels, "pilot_outputs": "keep"}) is None
