"""Pilot agents on batch schedulers.

An allocation on Slurm, LSF, PBS or Flux runs a short-lived agent (a *pilot*) that
joins the mesh with a single-use, name-scoped token, bids like any member, drains
before its walltime, hands back what it cannot finish and leaves (``LEFT``).

* :mod:`.drain`: the pure drain policy (what to take, what to hand back, when to leave).
* :mod:`.scale`: the pure autoscaling decision.
* :mod:`.tokens`: pilot join tokens (single use, scoped to ``<agent>-pilot-*`` names).
* :mod:`.jobs`: submitting, listing and cancelling pilot jobs through PSI/J.
* :mod:`.run`: the pilot agent inside the allocation (``python -m zambeze_mesh.pilots.run``).
"""
