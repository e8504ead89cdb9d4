"""``Scheduling`` service (contract net and status reports)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zambeze_mesh.agent.servicers.errors import not_built
from zambeze_mesh.v1 import scheduling_pb2_grpc

if TYPE_CHECKING:
    from zambeze_mesh.agent.agent import Agent

_WHY = "campaign execution"


class SchedulingServicer(scheduling_pb2_grpc.SchedulingServicer):
    """Contract-net RPCs between monitors and contractors."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    CallForProposals = not_built("Scheduling.CallForProposals", _WHY)
    Award = not_built("Scheduling.Award", _WHY)
    ReportStatus = not_built("Scheduling.ReportStatus", _WHY)
    Cancel = not_built("Scheduling.Cancel", _WHY)
