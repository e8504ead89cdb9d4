"""The ``zmesh`` command: parses arguments, calls the library, prints with rich.

Errors of the library become one line on stderr (``zmesh: error: ...``) and the exit
code of their class; nothing else is printed on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import InvalidInput, ZmeshError
from zambeze_mesh.settings.home import Home
from zambeze_mesh.version import __version__

Handler = Callable[[argparse.Namespace], int]
JSON_HELP = "print JSON instead of a table"
ID_HELP = "campaign id, or any unique prefix of it (see `zmesh campaigns`)"


def _labels(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"label {item!r} must look like key=value")
        out[key] = value
    return out


def _home(args: argparse.Namespace) -> Home:
    return Home.resolve(args.home)


def cmd_init(args: argparse.Namespace) -> int:
    from zambeze_mesh.agent.bootstrap import init_mesh

    home = _home(args)
    extra: dict[str, Any] = {}
    if args.slots:
        extra["slots"] = args.slots
    if args.ca_passphrase_file:
        from zambeze_mesh.security.keyfiles import read_passphrase

        extra["ca_passphrase"] = read_passphrase(args.ca_passphrase_file)
    cfg = init_mesh(
        home,
        name=args.name,
        listen=args.listen,
        advertise=args.advertise or "",
        mesh=args.mesh,
        labels=_labels(args.label),
        **extra,
    )
    print(f"created mesh {cfg.mesh!r} with agent {cfg.name!r} in {home.root}")
    if args.ca_passphrase_file:
        print("the CA key is encrypted: start the agent with --ca-passphrase-file to sign joins")
    print("next: `zmesh agent start`, then `zmesh token create` for each joining agent")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from zambeze_mesh.agent.bootstrap import create_token, open_store, parse_ttl

    store = open_store(_home(args))
    try:
        print(create_token(store, parse_ttl(args.ttl), args.uses))
    finally:
        store.close()
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from zambeze_mesh.agent.bootstrap import open_store, revoke_token

    store = open_store(_home(args))
    try:
        token_id = revoke_token(store, args.token)
    finally:
        store.close()
    print(f"revoked token {token_id}")
    return 0


def _join_token(args: argparse.Namespace) -> str:
    """The join token, from --token-file, $ZMESH_TOKEN or standard input (never argv)."""
    if args.token:
        print(
            "zmesh: warning: --token is deprecated: the token is visible to every user in the "
            "process list; use --token-file FILE, $ZMESH_TOKEN or standard input",
            file=sys.stderr,
        )
        text: str = args.token
    elif args.token_file:
        if args.token_file == "-":
            text = sys.stdin.readline()
        else:
            try:
                text = Path(args.token_file).read_text()
            except OSError as exc:
                raise InvalidInput(f"cannot read the token file: {exc}") from None
    elif os.environ.get("ZMESH_TOKEN"):
        text = os.environ["ZMESH_TOKEN"]
    elif sys.stdin.isatty():
        import getpass

        text = getpass.getpass("join token: ")
    else:
        text = sys.stdin.readline()
    if not text.strip():
        raise InvalidInput(
            "no join token: give --token-file FILE, set $ZMESH_TOKEN, or pipe it on standard "
            "input (create one with `zmesh token create` on the CA holder)"
        )
    return text.strip()


def cmd_join(args: argparse.Namespace) -> int:
    from zambeze_mesh.agent.join import join_mesh

    token = _join_token(args)
    seed = args.seed
    admission = args.seed_admission or ""
    if args.discover:
        from zambeze_mesh.membership.discovery import discover_seed
        from zambeze_mesh.security.tokens import parse_token

        seed, admission = discover_seed(
            timeout=args.discover_timeout,
            interface=args.interface,
            ca_digest=parse_token(token).ca_digest,
        )
        print(f"discovered seed {seed}")
    if not seed:
        raise InvalidInput("give a seed address (HOST:PORT) or --discover")
    extra: dict[str, Any] = {}
    if args.slots:
        extra["slots"] = args.slots
    result = asyncio.run(
        join_mesh(
            _home(args),
            seed,
            token,
            name=args.name,
            listen=args.listen,
            advertise=args.advertise or "",
            seed_admission=admission,
            labels=_labels(args.label),
            on_pending=lambda msg: print(f"waiting: {msg}", file=sys.stderr, flush=True),
            **extra,
        )
    )
    print(
        f"joined mesh {result.mesh!r} as {result.config.name!r} (certificate signed by "
        f"{result.signed_by}); start it with `zmesh agent start`"
    )
    return 0


def cmd_agent_start(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli import daemon
    from zambeze_mesh.security.keyfiles import passphrase_from

    home = _home(args)
    if args.foreground:
        asyncio.run(daemon.run_foreground(home, passphrase_from(args.ca_passphrase_file)))
        return 0
    if args.ca_passphrase_file:
        passphrase_from(args.ca_passphrase_file)  # a bad file fails here, not in the daemon
    pid = daemon.start_background(
        home, os.path.abspath(args.ca_passphrase_file) if args.ca_passphrase_file else ""
    )
    address = home.ports.read_text().split()[0]
    print(f"agent started (pid {pid}) on {address}")
    return 0


def cmd_agent_stop(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli import daemon

    pid = daemon.stop(_home(args), leave=args.leave)
    print("no agent was running" if pid is None else f"agent (pid {pid}) stopped")
    return 0


def cmd_agent_status(args: argparse.Namespace) -> int:
    from zambeze_mesh.settings.config import AgentConfig

    home = _home(args)
    home.require()
    cfg = AgentConfig.load(home.config)
    pid = home.running_pid()
    doc = {
        "name": cfg.name,
        "mesh": cfg.mesh,
        "home": str(home.root),
        "running": pid is not None,
        "pid": pid,
        "address": home.ports.read_text().split()[0] if pid and home.ports.exists() else None,
        "sandbox": _sandbox_line(home, cfg),
    }
    if args.json:
        print(json.dumps(doc))
    else:
        state = f"running (pid {pid}) on {doc['address']}" if pid else "stopped"
        print(f"agent {cfg.name} of mesh {cfg.mesh}: {state}")
        print(f"sandbox: {doc['sandbox']}")
    return 0 if pid else 1


def _sandbox_line(home: Home, cfg: Any) -> str:
    """How this agent's activities are confined (the same decision the agent makes)."""
    from zambeze_mesh.execution.sandbox import Sandbox

    try:
        sandbox = Sandbox(
            cfg.sandbox,
            home=home.root,
            data_dir=home.root / cfg.data_dir,
            exported_roots=[home.root / r for r in cfg.exported_roots],
            run_as=cfg.run_as,
        )
    except ZmeshError as exc:
        return f"misconfigured: {exc}"
    return sandbox.describe()


def cmd_members(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli.members import show_members

    return show_members(_home(args), as_json=args.json, watch=args.watch)


def cmd_members_remove(args: argparse.Namespace) -> int:
    from zambeze_mesh.agent.retire import retire_member
    from zambeze_mesh.security.keyfiles import passphrase_from

    done = retire_member(_home(args), args.name, passphrase_from(args.ca_passphrase_file))
    where = "spreading now" if done.delivered else "spreads when the agent runs"
    print(f"removed {done.name}: {done.certificates} certificate(s) revoked ({where})")
    return 0


def cmd_members_pending(args: argparse.Namespace) -> int:
    from zambeze_mesh.agent.approval import list_pending
    from zambeze_mesh.agent.bootstrap import open_store

    store = open_store(_home(args))
    try:
        pending = list_pending(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps([p.__dict__ for p in pending]))
        return 0
    for p in pending:
        state = "approved" if p.approved else "pending"
        print(f"{p.name}\t{p.address}\tkey {p.key_sha256[:16]}\t{state}")
    if not pending:
        print("no joins are waiting")
    return 0


def cmd_members_approve(args: argparse.Namespace) -> int:
    from zambeze_mesh.agent.approval import approve
    from zambeze_mesh.agent.bootstrap import open_store

    store = open_store(_home(args))
    try:
        done = approve(store, args.name)
    finally:
        store.close()
    print(f"approved {done.name} at {done.address} (key {done.key_sha256[:16]})")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli.plugins import show_plugins

    return show_plugins(_home(args), as_json=args.json)


def cmd_cert_issue_client(args: argparse.Namespace) -> int:
    from zambeze_mesh.agent.bootstrap import issue_client, open_store

    store = open_store(_home(args))
    try:
        from zambeze_mesh.security.keyfiles import passphrase_from

        bundle = issue_client(
            store, args.name, Path(args.out), ca_passphrase=passphrase_from(args.ca_passphrase_file)
        )
    finally:
        store.close()
    print(f"issued {bundle.identity}")
    print(f"  key:  {bundle.key}\n  cert: {bundle.cert}\n  ca:   {bundle.ca}")
    return 0


def cmd_data_ls(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli import data

    return data.ls(_home(args), args.target, as_json=args.json, limit=args.limit)


def cmd_data_get(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli import data

    return data.get(_home(args), args.source, args.local, quiet=args.quiet)


def cmd_data_put(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli import data

    return data.put(_home(args), args.local, args.target, quiet=args.quiet)


def cmd_run(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli.campaigns import run_file

    return run_file(_home(args), args.file, args.args)


def cmd_campaigns(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli.campaigns import list_campaigns

    return list_campaigns(_home(args), args.json)


def cmd_status(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli.campaigns import show_status

    return show_status(
        _home(args), args.campaign, as_json=args.json, watch=args.watch, graph=args.graph
    )


def cmd_cancel(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli.campaigns import cancel

    return cancel(_home(args), args.campaign)


def cmd_ui(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli.ui import serve_ui

    return serve_ui(_home(args), args.host, args.port, args.open)


def cmd_pilot_submit(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli import pilots

    return pilots.submit(
        _home(args),
        nodes=args.nodes,
        walltime=args.walltime or "",
        slots=args.slots,
        labels=_labels(args.label),
        outputs=args.outputs,
    )


def cmd_pilot_ls(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli import pilots

    return pilots.ls(_home(args), as_json=args.json)


def cmd_pilot_events(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli import pilots

    return pilots.events(_home(args), as_json=args.json, limit=args.limit)


def cmd_pilot_cancel(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli import pilots

    return pilots.cancel(_home(args), args.pilot, timeout=args.timeout)


def cmd_provenance(args: argparse.Namespace) -> int:
    from zambeze_mesh.cli.provenance import export

    return export(
        _home(args),
        args.campaign,
        args.out,
        with_data=args.with_data,
        max_data_mib=args.max_data,
        check=not args.no_check,
        license=args.license or "",
        validate=args.validate,
    )


def build_parser() -> argparse.ArgumentParser:
    """The full ``zmesh`` argument parser."""
    home_help = "agent home (default: $ZMESH_HOME or ~/.zmesh)"
    p = argparse.ArgumentParser(
        prog="zmesh",
        description="zambeze-mesh: cross-facility workflows on a peer-to-peer agent mesh",
    )
    p.add_argument("--home", help=home_help)
    p.add_argument("--version", action="version", version=f"zmesh {__version__}")
    # Sub-commands accept --home too; SUPPRESS keeps them from resetting the top-level one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help=home_help)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Handler, parent: Any = sub, **kw: Any) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, parents=[common], **kw)
        sp.set_defaults(handler=handler)
        return sp

    def agent_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--name", required=True, help="this agent's name")
        sp.add_argument("--listen", required=True, help="HOST:PORT of the mTLS listener")
        sp.add_argument("--advertise", help="HOST:PORT others use (default: --listen)")
        sp.add_argument("--label", action="append", help="key=value label (repeatable)")
        sp.add_argument("--slots", type=int, help="activities run at once (default 2)")

    sp = add("init", cmd_init, help="create a new mesh with this agent as its first member")
    agent_opts(sp)
    sp.add_argument("--mesh", default="default", help="mesh name (default: default)")
    passphrase_help = "file whose first line is the CA key's passphrase"
    sp.add_argument(
        "--ca-passphrase-file", help=passphrase_help + " (the CA key is stored encrypted)"
    )

    tok = sub.add_parser("token", help="join tokens").add_subparsers(dest="sub", required=True)
    sp = add("create", cmd_token_create, tok, help="print a new join token")
    sp.add_argument("--ttl", default="1h", help="lifetime, e.g. 15m, 1h, 7d (default 1h)")
    sp.add_argument(
        "--uses", type=int, default=0, help="admit at most N agents (1: single-use; default: any)"
    )
    sp = add("revoke", cmd_token_revoke, tok, help="revoke a join token")
    sp.add_argument("token")

    sp = add("join", cmd_join, help="join an existing mesh through a seed agent")
    sp.add_argument("seed", nargs="?", default="", help="HOST:PORT of any member")
    sp.add_argument(
        "--token-file",
        metavar="FILE",
        help="read the join token from FILE ('-': standard input); else $ZMESH_TOKEN, "
        "else standard input",
    )
    sp.add_argument("--token", help=argparse.SUPPRESS)  # deprecated: visible to other users
    sp.add_argument("--seed-admission", help="seed's admission HOST:PORT (default port+1)")
    sp.add_argument("--discover", action="store_true", help="find a seed with zeroconf")
    sp.add_argument("--discover-timeout", type=float, default=5.0)
    sp.add_argument("--interface", help="interface address for --discover")
    agent_opts(sp)

    ag = sub.add_parser("agent", help="run the agent").add_subparsers(dest="sub", required=True)
    sp = add("start", cmd_agent_start, ag, help="start the agent (returns once serving)")
    sp.add_argument("--foreground", action="store_true", help="run in this process")
    sp.add_argument(
        "--ca-passphrase-file",
        help=passphrase_help + " (default $ZMESH_CA_PASSPHRASE_FILE): unlocks joins",
    )
    sp = add("stop", cmd_agent_stop, ag, help="stop the agent gracefully")
    sp.add_argument("--leave", action="store_true", help="announce leaving the mesh first")
    sp = add("status", cmd_agent_status, ag, help="is the agent running?")
    sp.add_argument("--json", action="store_true", help=JSON_HELP)

    sp = add("members", cmd_members, help="the mesh as this agent sees it")
    sp.add_argument("--json", action="store_true", help=JSON_HELP)
    sp.add_argument("--watch", action="store_true", help="follow changes live")
    msub = sp.add_subparsers(dest="sub")
    sp = add("remove", cmd_members_remove, msub, help="retire a name, revoke its certificates")
    sp.add_argument("name")
    sp.add_argument("--ca-passphrase-file", help=passphrase_help)
    sp = add("pending", cmd_members_pending, msub, help="joins waiting for approval")
    sp.add_argument("--json", action="store_true")
    sp = add("approve", cmd_members_approve, msub, help="approve a pending join")
    sp.add_argument("name")

    sp = add("plugins", cmd_plugins, help="execution plugins: loaded, failed (and why)")
    sp.add_argument("--json", action="store_true", help=JSON_HELP)

    sp = add("run", cmd_run, help="run a campaign file and follow it to the end")
    sp.add_argument(
        "file",
        metavar="FILE",
        help="a Python file that builds and dispatches campaigns with zambeze_mesh "
        "(run as __main__ against this agent); zmesh then follows each to its end",
    )
    sp.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the file")
    sp = add("campaigns", cmd_campaigns, help="campaigns this agent monitors")
    sp.add_argument("--json", action="store_true", help=JSON_HELP)
    sp = add("status", cmd_status, help="one campaign's state")
    sp.add_argument("campaign", metavar="ID", help=ID_HELP)
    sp.add_argument(
        "--json",
        action="store_true",
        help="print the campaign as one JSON object (id, state, created/finished times, "
        "activities with state, agent, attempt, message, detail)",
    )
    sp.add_argument("--watch", action="store_true", help="follow live until it ends")
    sp.add_argument("--graph", metavar="FILE", help="also draw the DAG into FILE (.png, .svg)")
    sp = add("cancel", cmd_cancel, help="cancel a campaign")
    sp.add_argument("campaign", metavar="ID", help=ID_HELP)

    sp = add("ui", cmd_ui, help="serve the live web view of the mesh and its campaigns")
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    sp.add_argument("--open", action="store_true", help="open the page in a browser")

    sp = add("provenance", cmd_provenance, help="export a campaign's Provenance Run Crate")
    sp.add_argument("campaign")
    sp.add_argument("--out", required=True, metavar="DIR|FILE.zip", help="crate directory or zip")
    sp.add_argument("--with-data", action="store_true", help="copy output files into the crate")
    sp.add_argument(
        "--max-data", type=float, default=100.0, metavar="MIB", help="bound of --with-data"
    )
    sp.add_argument("--no-check", action="store_true", help="do not check outputs still exist")
    sp.add_argument("--license", help="license URI of the crate (default CC-BY-4.0)")
    sp.add_argument("--validate", action="store_true", help="run roc-validator (offline)")

    cert = sub.add_parser("cert", help="certificates").add_subparsers(dest="sub", required=True)
    sp = add("issue-client", cmd_cert_issue_client, cert, help="credentials for a client")
    sp.add_argument("name")
    sp.add_argument("--out", required=True, help="directory for client.key/.crt and ca.crt")
    sp.add_argument("--ca-passphrase-file", help=passphrase_help)

    dat = sub.add_parser("data", help="data held by agents (NAME://path)")
    dsub = dat.add_subparsers(dest="sub", required=True)
    sp = add("ls", cmd_data_ls, dsub, help="list a directory on an agent")
    sp.add_argument(
        "target", metavar="NAME://path", help="a directory on agent NAME; NAME:// is its top"
    )
    sp.add_argument("--json", action="store_true", help=JSON_HELP)
    sp.add_argument("--limit", type=int, default=0, help="most entries (default 1000)")
    sp = add("get", cmd_data_get, dsub, help="fetch a file or directory from an agent")
    sp.add_argument("source", metavar="NAME://path")
    sp.add_argument("local", metavar="LOCAL")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp = add("put", cmd_data_put, dsub, help="upload a file or directory to an agent")
    sp.add_argument("local", metavar="LOCAL")
    sp.add_argument("target", metavar="NAME://path")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    pil = sub.add_parser("pilot", help="pilot agents in batch allocations")
    psub = pil.add_subparsers(dest="sub", required=True)
    sp = add("submit", cmd_pilot_submit, psub, help="submit a pilot job (scheduler in config)")
    sp.add_argument("--nodes", type=int, default=1, help="nodes of the allocation (default 1)")
    sp.add_argument("--walltime", help="e.g. 30, 1:00:00 (default: the agent's walltime)")
    sp.add_argument("--slots", type=int, default=0, help="activities at once (default: CPUs)")
    sp.add_argument("--label", action="append", help="key=value label (repeatable)")
    sp.add_argument(
        "--outputs",
        choices=("return", "keep"),
        default="return",
        help="return: outputs stay served by this agent after the pilot left (default)",
    )
    sp = add("ls", cmd_pilot_ls, psub, help="pilots with job, scheduler and mesh state")
    sp.add_argument("--json", action="store_true")
    sp = add("events", cmd_pilot_events, psub, help="autoscaler decisions, submits, cancels")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--limit", type=int, default=100, help="latest N events (100)")
    sp = add("cancel", cmd_pilot_cancel, psub, help="drain a pilot, then cancel its job")
    sp.add_argument("pilot", help="pilot name or job id")
    sp.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (300)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zmesh``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except ZmeshError as exc:
        print(f"zmesh: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
