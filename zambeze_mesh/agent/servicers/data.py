"""``Data`` service (offers, streaming fetch, push, stat, list)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zambeze_mesh.agent.servicers.errors import not_built
from zambeze_mesh.v1 import data_pb2_grpc

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent

_WHY = "data fabric"


class DataServicer(data_pb2_grpc.DataServicer):
    """Agent-to-agent data movement."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    Offer = not_built("Data.Offer", _WHY)
    Fetch = not_built("Data.Fetch", _WHY)
    Push = not_built("Data.Push", _WHY)
    Stat = not_built("Data.Stat", _WHY)
    List = not_built("Data.List", _WHY)
