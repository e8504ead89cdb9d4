"""An agent's settings on disk: its ``config.toml`` (:mod:`.config`), its home
directory layout (:mod:`.home`) and its structured log (:mod:`.logs`).

This package sits below every other one (it imports only :mod:`zambeze_mesh.errors`),
so the data fabric, executors, campaign client and CLI can read an agent's
configuration without importing the agent itself.
"""
