"""The campaign control plane as pure state machines.

Each machine here is driven by ``step(now, input) -> effects`` with typed inputs and
effects, owns its transition table, and imports no asyncio, grpc, sqlite3 or networkx:
the async shells in :mod:`zambeze_mesh.agent` do the I/O (journal commits, RPCs,
processes) and apply a step's effects only after its journal records have committed.
"""
