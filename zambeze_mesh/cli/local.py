"""Talking to the agent of a home through its Unix socket."""

from __future__ import annotations

import grpc

from zambeze_mesh.errors import Unavailable
from zambeze_mesh.grpc_status import from_rpc_error
from zambeze_mesh.settings.home import Home
from zambeze_mesh.v1 import campaigns_pb2, campaigns_pb2_grpc


def require_agent(home: Home) -> None:
    """Raise one clear error when no agent runs on ``home`` (every command that needs one).

    Checked before connecting, so a stopped agent never surfaces as a raw gRPC message.
    """
    home.require()
    if home.running_pid() is None or not home.socket.exists():
        raise Unavailable(
            f"no agent is running on {home.root} (start one with "
            f"`zmesh --home {home.root} agent start`)"
        )


def local_channel(home: Home) -> grpc.aio.Channel:
    """An insecure channel over the home's Unix socket (file mode 0600)."""
    require_agent(home)
    return grpc.aio.insecure_channel(f"unix:{home.socket}")


async def list_members(home: Home, timeout: float = 10.0) -> campaigns_pb2.ListMembersResponse:
    """Ask the local agent for its member view."""
    async with local_channel(home) as ch:
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        try:
            resp: campaigns_pb2.ListMembersResponse = await stub.ListMembers(
                campaigns_pb2.ListMembersRequest(), timeout=timeout
            )
            return resp
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
