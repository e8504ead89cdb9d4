"""The paper's electron-microscopy science campaign (PEARC'24, Fig. 3).

Run it with ``zmesh run campaign.py [--quick]`` against any agent of a mesh that
has agents labelled ``role=edge``, ``role=hpc``, ``role=cluster`` and an agent
named ``repository`` (``scripts/demo`` builds such a mesh on this machine).
"""

import os
import sys

from zambeze_mesh import Campaign, PythonActivity, ShellActivity, TransferActivity, WFActivity

QUICK = "--quick" in sys.argv[1:] or os.environ.get("ZMESH_DEMO_QUICK") == "1"
GRID = {"depth": [1, 2], "base": [8], "lr": [0.003, 0.01], "epochs": [5], "batch_size": [8]}
if QUICK:
    GRID = {"depth": [1, 2], "base": [8], "lr": [0.01], "epochs": [4], "batch_size": [4]}

# Create empty science campaign
campaign = Campaign("electron microscopy")

# Activity 1: Microscope simulation (on the edge, beside the instrument)
act_1 = ShellActivity(
    name="create microscope images",
    script_uri="edge://mscope_sim.sh",
    cmd="./mscope_sim.sh " + ("--quick" if QUICK else "--n 64 --size 64"),
    output_dir="@agentdir/images",
    requires={"labels": {"role": "edge"}},
)

# Activity 2: Train machine learning models (a Dask hyperparameter search on HPC)
act_2 = WFActivity(
    name="train ml models",
    wf_manager="dask",
    wf_config={"grid": GRID, "test_fraction": 0.25, "seed": 0},
    wf_uri="hpc://train.py",
    # Data from the microscope (images) and the edge (instrument calibration)
    data_uris=[act_1.output_dir, "edge://calibration.json"],
    working_dir="@agentdir/tmp",
    output_dir="@workingdir/models",
    requires={"labels": {"role": "hpc"}},
)

# Activity 3: Select best-performing models (validation tracked with MLflow)
act_3 = PythonActivity(
    name="model validation",
    data_uris=[act_2.output_dir],
    script_uri="cluster://mod_select.py",
    args=["-metric", "iou", "-k", "2", "--n-val", "12" if QUICK else "24"],
    output_dir="@agentdir/models",
    requires={"labels": {"role": "cluster"}},
)

# Activity 4: Transfer best models to the repository
act_4 = TransferActivity(
    name="store best models",
    source=act_3.output_dir,
    dest="repository://user/repository/",
)

# Load the activities into the campaign
campaign.add_activities([act_1, act_2, act_3, act_4])

# Dispatch the campaign and poll!
campaign.dispatch()
campaign.poll(blocking=True)
