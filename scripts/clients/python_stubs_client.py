#!/usr/bin/env python3
"""Example client of the ``Campaigns`` service using only the generated gRPC stubs.

No ``zambeze_mesh.campaign`` helpers: just ``zambeze_mesh.v1.*_pb2(_grpc)`` and ``grpc``,
as a program in any language would do it from the ``.proto`` files. It connects to an
agent's mTLS port with a client certificate issued by the mesh
(``zmesh cert issue-client NAME --out DIR``), submits a two-activity campaign (a shell
echo and a dependent shell activity that reads its output), follows ``Watch`` to the end
printing every event (resuming from the last ``seq`` if the stream breaks), and exits 0
when the campaign SUCCEEDED.

Usage::

    python python_stubs_client.py --target HOST:PORT --ca ca.crt --cert client.crt --key client.key

``--insecure-no-cert`` presents no client certificate (the agent refuses the TLS
handshake); ``--call-membership`` calls the agent-only ``Membership.Ping`` with the client
certificate (the agent answers PERMISSION_DENIED). Exit codes: 0 SUCCEEDED, 1 the
campaign ended otherwise, 2 usage error, 3 RPC error (its status code name is printed).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import grpc

from zambeze_mesh.v1 import (
    campaigns_pb2,
    campaigns_pb2_grpc,
    common_pb2,
    membership_pb2,
    membership_pb2_grpc,
)

FINAL = {
    common_pb2.CAMPAIGN_STATE_SUCCEEDED,
    common_pb2.CAMPAIGN_STATE_FAILED,
    common_pb2.CAMPAIGN_STATE_CANCELLED,
}
MAX_RESUMES = 5


class StreamError(Exception):
    """The event stream broke its contract (a gap in seq numbers)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="agent mTLS address host:port")
    p.add_argument("--ca", required=True, help="mesh CA bundle (ca.crt)")
    p.add_argument("--cert", help="client certificate (client.crt)")
    p.add_argument("--key", help="client key (client.key)")
    p.add_argument("--name", default="python stubs client", help="campaign name")
    p.add_argument("--server-name", help="expected name in the agent certificate")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after SECONDS")
    p.add_argument("--insecure-no-cert", action="store_true", help="present no certificate")
    p.add_argument("--call-membership", action="store_true", help="call Membership.Ping")
    args = p.parse_args(argv)
    if not args.insecure_no_cert and not (args.cert and args.key):
        p.error("--cert and --key are required (or --insecure-no-cert)")
    return args


def channel(args: argparse.Namespace) -> grpc.Channel:
    """An mTLS channel to the agent (no client certificate with --insecure-no-cert)."""
    ca = Path(args.ca).read_bytes()
    if args.insecure_no_cert:
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=Path(args.key).read_bytes(),
            certificate_chain=Path(args.cert).read_bytes(),
        )
    options = []
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    return grpc.secure_channel(args.target, creds, options=options)


def campaign_request(name: str) -> campaigns_pb2.SubmitRequest:
    """Two shell activities; ``reply`` reads ``greet``'s output dir (``@output:greet``)."""
    greet = common_pb2.ActivitySpec(
        name="greet",
        shell=common_pb2.ShellSpec(
            cmd='echo "hello from python stubs" > "$ZMESH_OUTPUT_DIR/greeting.txt"; echo greeted'
        ),
    )
    reply = common_pb2.ActivitySpec(
        name="reply",
        shell=common_pb2.ShellSpec(cmd='cat "$ZMESH_INPUT_0/greeting.txt"'),
        data_uris=["@output:greet"],
        depends_on=["greet"],
    )
    return campaigns_pb2.SubmitRequest(
        name=name, activities=[greet, reply], client_request_id=uuid.uuid4().hex
    )


def describe(ev: common_pb2.Event) -> str:
    """One line per event."""
    if ev.activity:
        what = (
            f"activity={ev.activity} state={common_pb2.ActivityState.Name(ev.state)}"
            f" attempt={ev.attempt}"
        )
    else:
        what = f"campaign state={common_pb2.CampaignState.Name(ev.campaign_state)}"
    line = f"event seq={ev.seq} {what}"
    if ev.agent:
        line += f" agent={ev.agent}"
    if ev.message:
        line += f" message={ev.message!r}"
    if "stdout_tail" in ev.detail:
        line += f" stdout={ev.detail['stdout_tail']!r}"
    return line


def follow(
    stub: campaigns_pb2_grpc.CampaignsStub, campaign_id: str, deadline: float
) -> common_pb2.Event:
    """Print events until the final campaign event; resume after the last seq on UNAVAILABLE."""
    last = 0
    resumes = 0
    while True:
        req = campaigns_pb2.WatchRequest(campaign_id=campaign_id, after_seq=last, follow=True)
        try:
            for ev in stub.Watch(req, timeout=max(1.0, deadline - time.monotonic())):
                if ev.seq <= last:
                    continue  # already seen before a resume
                if ev.seq != last + 1:
                    raise StreamError(f"event stream skipped from seq {last} to {ev.seq}")
                last = ev.seq
                resumes = 0
                print(describe(ev), flush=True)
                if not ev.activity and ev.campaign_state in FINAL:
                    return ev
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or resumes >= MAX_RESUMES:
                raise
        else:
            if resumes >= MAX_RESUMES:
                raise StreamError("the event stream ended before the campaign did")
        resumes += 1
        time.sleep(0.2 * resumes)


def run(args: argparse.Namespace) -> int:
    """The whole flow; returns the exit code."""
    deadline = time.monotonic() + args.timeout
    with channel(args) as ch:
        if args.call_membership:
            ping = membership_pb2.PingRequest(seq=1)
            setattr(ping, "from", "stubs-client")  # `from` is a Python keyword
            membership_pb2_grpc.MembershipStub(ch).Ping(ping, timeout=args.timeout)
            print("Membership.Ping was accepted (it should not be)")
            return 1
        stub = campaigns_pb2_grpc.CampaignsStub(ch)
        resp = stub.Submit(campaign_request(args.name), timeout=args.timeout)
        print(f"submitted campaign {resp.campaign_id} (monitor {resp.monitor})", flush=True)
        final = follow(stub, resp.campaign_id, deadline)
        state = common_pb2.CampaignState.Name(final.campaign_state).removeprefix("CAMPAIGN_STATE_")
        print(f"campaign {resp.campaign_id} {state}")
        return 0 if final.campaign_state == common_pb2.CAMPAIGN_STATE_SUCCEEDED else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except grpc.RpcError as exc:
        print(f"rpc error: {exc.code().name}: {exc.details()}")
        if args.insecure_no_cert and exc.code() == grpc.StatusCode.UNAVAILABLE:
            print(
                "refused: TLS handshake failed (the agent requires a client certificate"
                " issued by the mesh)"
            )
        return 3
    except StreamError as exc:
        print(f"error: {exc}")
        return 3


if __name__ == "__main__":
    sys.exit(main())
