"""Pilot agents on batch schedulers.

An allocation on Slurm, LSF, PBS or Flux runs a short-lived agent (a *pilot*) that
joins the mesh with a single-use, name-scoped token, bids like any member, drains
before its walltime, hands back what it cannot finish and leaves (``LEFT``).

* :mod:`.drain`: the pure drain policy (what to take, what to hand back, when to leave).
* :mod:`.scale`: the pure autoscaling decision.
* :mod:`.tokens`: pilot join tokens (single use, scoped to ``<agent>-pilot-*`` names).
* :mod:`.jobs`: submitting, listing and cancelling pilot jobs through PSI/J.
* :mod:`.spec`: what a pilot job runs (``python -m zambeze_mesh.agent.pilot``, the pilot
  agent inside the allocation, and its autoscaler :mod:`zambeze_mesh.agent.pilot_scaler`
  live with the agent they drive).
"""
