"""Agent configuration: ``config.toml`` in the agent home, read with :mod:`tomllib`.

The file is small and flat. Unknown keys are refused so that typos do not pass silently.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import InvalidInput

DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


def split_hostport(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and validate the port."""
    if not value or ":" not in value:
        raise InvalidInput(f"expected HOST:PORT, got {value!r}")
    host, _, port_s = value.rpartition(":")
    host = host.strip("[]")
    if not host:
        raise InvalidInput(f"expected HOST:PORT, got {value!r}")
    try:
        port = int(port_s)
    except ValueError:
        raise InvalidInput(f"port in {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise InvalidInput(f"port in {value!r} is out of range")
    return host, port


def join_hostport(host: str, port: int) -> str:
    """Inverse of :func:`split_hostport`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def admission_for(address: str) -> str:
    """The default admission address of an agent listening on ``address``: port + 1."""
    host, port = split_hostport(address)
    if port == 0:
        return join_hostport(host, 0)
    return join_hostport(host, port + 1)


@dataclass
class AgentConfig:
    """Everything an agent reads from ``config.toml``."""

    name: str
    mesh: str
    listen: str
    advertise: str = ""
    admission_listen: str = ""
    admission_advertise: str = ""
    data_dir: str = "data"
    slots: int = 2
    # Accepted activities (running + queued) at most; more are refused as busy and
    # the monitor offers them again later. 0 = 512 per slot.
    max_queued: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    exported_roots: list[str] = field(default_factory=list)
    transfer_methods: list[str] = field(default_factory=lambda: ["tls-stream", "grpc-stream"])
    # tls-stream (data/tlsserve.py): the data port beside gRPC. ``data_listen`` is
    # host:port (default: the listen host, any free port); ``data_ports`` = [lo, hi]
    # picks the first free port of that range instead. ``transfer_streams`` is how
    # many TLS connections a fetch uses at once (stripes of a big file, or files).
    data_listen: str = ""
    data_ports: list[int] = field(default_factory=list)
    transfer_streams: int = 2
    # rsync method (data/rsync.py), used when "rsync" is in transfer_methods. As a
    # requester: the ssh command with its identity (the holder's port is added).
    # As a holder: where others pull from (default: advertise host, the agent's
    # user, ssh's default port).
    rsync_ssh: str = ""
    rsync_host: str = ""
    rsync_port: int = 0
    rsync_user: str = ""
    accept_functions: bool = True
    # Where activities run (execution/sandbox.py): "auto" uses bubblewrap when it
    # works here, "bwrap" requires it, "none" turns confinement off. run_as: an
    # unprivileged user activities run as (needs an agent running as root).
    sandbox: str = "auto"
    run_as: str = ""
    # Warm function workers in the sandbox: "owner" (shared by the campaigns of one
    # owner: they see that owner's runs dirs only, and a new campaign of a known
    # owner finds a warm worker), "campaign" (each campaign's own workers, which see
    # only its runs dir; a campaign's first function waits for a worker to start)
    # or "shared" (workers reused across campaigns: they see every campaign's runs
    # dir, still not the keys, store or socket).
    sandbox_functions: str = "owner"
    plugins: list[str] = field(default_factory=list)
    disabled_plugins: list[str] = field(default_factory=list)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    # Data.Fetch: streams one peer may have open at once (more: RESOURCE_EXHAUSTED),
    # and how long a stream waits for a reader that does not take the next chunk.
    max_streams_per_peer: int = 16
    stream_idle_timeout_s: float = 60.0
    # Data.Push: quota of pushed bytes (running pushes plus pushed objects still on
    # disk); the stream cap and idle timeout above apply to Push streams too.
    max_push_bytes: int = 1 << 40
    # Submit: activities one identity may have waiting for admission (validation,
    # DAG, journal) at once; more is RESOURCE_EXHAUSTED with a retry hint. A single
    # campaign is always admitted when its identity has nothing else waiting.
    max_admitting_activities: int = 20_000
    membership: str = "local"
    log_level: str = "info"
    # agent.log rotates at log_max_bytes, keeping log_backups old files.
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    # Admission port: Join calls one source address may make (burst, then per second).
    join_burst: int = 20
    join_rate_per_s: float = 5.0
    # On the CA holder: joins wait for `zmesh members approve NAME`.
    join_approval: bool = False
    zeroconf: bool = True
    # Batch execution (execution/batch.py): with a scheduler, shell and python
    # activities run as batch jobs through PSI/J.
    scheduler: str = ""
    queue: str = ""
    account: str = ""
    walltime: str = ""
    # HOST:PORT where the agent serves the web view itself ("" = not; see `zmesh ui`).
    ui_listen: str = ""
    # Identities (SPIFFE IDs) that see and control every campaign on this agent;
    # everyone else sees only their own. Unix-socket callers always do.
    admins: list[str] = field(default_factory=list)
    # [policy]: identity (SPIFFE ID or "*") -> plugins it may run here, "functions"
    # to ship functions (settings/policy.py). Empty: everyone may run everything.
    policy: dict[str, list[str]] = field(default_factory=dict)
    # Pilot autoscaling (zambeze_mesh/pilots): min, max, nodes, slots, walltime,
    # idle_timeout, backlog_wait, labels, per_pilot. Needs a scheduler.
    pilots: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        split_hostport(self.listen)
        if self.ui_listen:
            split_hostport(self.ui_listen)
        if not self.advertise:
            self.advertise = self.listen
        if not self.admission_listen:
            self.admission_listen = admission_for(self.listen)
        if not self.admission_advertise:
            self.admission_advertise = admission_for(self.advertise)
        for value in (self.advertise, self.admission_listen, self.admission_advertise):
            split_hostport(value)
        if self.slots < 1 or self.slots > 4096:
            raise InvalidInput(f"slots must be between 1 and 4096, got {self.slots}")
        if not isinstance(self.max_queued, int) or not 0 <= self.max_queued <= 1_000_000:
            raise InvalidInput(f"max_queued must be between 0 and 1000000, got {self.max_queued}")
        if self.membership not in ("local", "lan", "wan"):
            raise InvalidInput(f"membership must be local, lan or wan, got {self.membership!r}")
        if not 1024 <= self.max_message_bytes <= 256 * 1024 * 1024:
            raise InvalidInput("max_message_bytes must be between 1 KiB and 256 MiB")
        if not isinstance(self.max_streams_per_peer, int) or not (
            1 <= self.max_streams_per_peer <= 4096
        ):
            raise InvalidInput("max_streams_per_peer must be between 1 and 4096")
        if not isinstance(self.stream_idle_timeout_s, int | float) or not (
            0.1 <= self.stream_idle_timeout_s <= 86400
        ):
            raise InvalidInput("stream_idle_timeout_s must be between 0.1 and 86400 seconds")
        if not isinstance(self.max_push_bytes, int) or not 0 <= self.max_push_bytes <= 1 << 50:
            raise InvalidInput("max_push_bytes must be between 0 and 1 PiB")
        if not isinstance(self.max_admitting_activities, int) or not (
            1 <= self.max_admitting_activities <= 10_000_000
        ):
            raise InvalidInput("max_admitting_activities must be between 1 and 10000000")
        if not isinstance(self.log_max_bytes, int) or not 4096 <= self.log_max_bytes <= 2**40:
            raise InvalidInput("log_max_bytes must be between 4096 and 2**40")
        if not isinstance(self.log_backups, int) or not 1 <= self.log_backups <= 100:
            raise InvalidInput("log_backups must be between 1 and 100")
        if not isinstance(self.join_burst, int) or not 1 <= self.join_burst <= 100_000:
            raise InvalidInput("join_burst must be between 1 and 100000")
        if not isinstance(self.join_rate_per_s, int | float) or not (
            0.001 <= self.join_rate_per_s <= 100_000
        ):
            raise InvalidInput("join_rate_per_s must be between 0.001 and 100000")
        self._check_rsync()
        if self.sandbox not in ("auto", "bwrap", "none"):
            raise InvalidInput(f"sandbox must be auto, bwrap or none, got {self.sandbox!r}")
        if self.sandbox_functions not in ("owner", "campaign", "shared"):
            raise InvalidInput(
                "sandbox_functions must be owner, campaign or shared, "
                f"got {self.sandbox_functions!r}"
            )
        if not isinstance(self.run_as, str) or (self.run_as and not self.run_as.isprintable()):
            raise InvalidInput("run_as must be a user name")
        from zambeze_mesh.settings.checks import check_admins

        if not isinstance(self.admins, list):
            raise InvalidInput("admins must be a list of SPIFFE IDs")
        self.admins = check_admins(self.admins)
        from zambeze_mesh.settings.policy import ExecutionPolicy

        ExecutionPolicy.from_config(self.policy)
        self._check_data()
        from zambeze_mesh.settings.checks import check_scheduler, parse_walltime

        check_scheduler(self.scheduler)
        parse_walltime(self.walltime)
        for key in ("queue", "account"):
            value = getattr(self, key)
            if not isinstance(value, str) or len(value) > 256 or any(c in value for c in "\n\"'"):
                raise InvalidInput(f"{key} must be a plain name, got {value!r}")
        if (self.queue or self.account or self.walltime) and not self.scheduler:
            raise InvalidInput("queue, account and walltime need a scheduler")
        if self.pilots:
            from zambeze_mesh.settings.pilots import PilotPolicy

            if not isinstance(self.pilots, dict):
                raise InvalidInput("[pilots] must be a table")
            if not self.scheduler:
                raise InvalidInput("[pilots] needs a scheduler")
            PilotPolicy.from_table(self.pilots)

    def _check_data(self) -> None:
        if self.data_listen:
            split_hostport(self.data_listen)
        ports = self.data_ports
        if ports and (
            len(ports) != 2
            or not all(isinstance(p, int) and 0 < p < 65536 for p in ports)
            or not 0 <= ports[1] - ports[0] < 1024
        ):
            raise InvalidInput(f"data_ports must be [lo, hi], lo <= hi < lo + 1024: {ports}")
        if not isinstance(self.transfer_streams, int) or not 1 <= self.transfer_streams <= 16:
            raise InvalidInput("transfer_streams must be between 1 and 16")

    def _check_rsync(self) -> None:
        from zambeze_mesh.settings.checks import check_host, check_user

        if self.rsync_host:
            check_host(self.rsync_host)
        if self.rsync_user:
            check_user(self.rsync_user)
        if not isinstance(self.rsync_port, int) or not 0 <= self.rsync_port <= 65535:
            raise InvalidInput(f"rsync_port must be between 0 and 65535, got {self.rsync_port!r}")
        if not isinstance(self.rsync_ssh, str) or "\n" in self.rsync_ssh:
            raise InvalidInput("rsync_ssh must be a one-line command")

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        """Read and validate a config file."""
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InvalidInput(f"no config at {path}: run `zmesh init` or `zmesh join`") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{path}: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AgentConfig:
        """Build from a parsed TOML table, refusing unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(f"unknown config keys: {', '.join(unknown)}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise InvalidInput(f"bad config: {exc}") from None

    def save(self, path: Path) -> None:
        """Write the config as TOML (atomically)."""
        lines = []
        tables = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                tables.append((f.name, value))
            else:
                lines.append(f"{f.name} = {_toml_value(value)}")
        for name, table in tables:
            lines.append("")
            lines.append(f"[{name}]")
            for k, v in sorted(table.items()):
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)


def _toml_key(key: str) -> str:
    if key.replace("_", "").replace("-", "").isalnum():
        return key
    return _toml_value(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in sorted(value.items()))
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
