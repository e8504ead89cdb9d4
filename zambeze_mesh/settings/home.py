"""The agent home directory: where config, database, sockets, pid and logs live.

Resolution order: explicit ``--home``, else ``$ZMESH_HOME``, else ``~/.zmesh``.
One running agent per home is enforced with an ``fcntl`` lock on ``agent.lock``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zambeze_mesh.errors import AlreadyExists, FailedPrecondition

#: Longest Unix socket path used as is (sun_path holds 107 bytes and a NUL).
MAX_SOCKET_PATH = 100


def _short_socket_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"zmesh-{os.getuid()}"


@dataclass(frozen=True)
class Home:
    """Paths inside one agent home."""

    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None) -> Home:
        """Pick the home from the argument, ``ZMESH_HOME`` or ``~/.zmesh``."""
        if explicit:
            return cls(Path(explicit).expanduser().absolute())
        env = os.environ.get("ZMESH_HOME")
        if env:
            return cls(Path(env).expanduser().absolute())
        return cls(Path.home() / ".zmesh")

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def db(self) -> Path:
        return self.root / "zmesh.db"

    @property
    def socket(self) -> Path:
        """The agent's Unix socket: ``agent.sock`` in the home, or, when that path is
        longer than a socket address allows (deep homes, e.g. a pilot's inside its
        submitter's), a short path in a private per-user dir named after the home."""
        path = self.root / "agent.sock"
        if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(os.fsencode(os.path.realpath(self.root))).hexdigest()[:20]
        return _short_socket_dir() / f"{digest}.sock"

    def prepare_socket_dir(self) -> None:
        """Create the socket's directory when it lies outside the home (0700, ours)."""
        parent = self.socket.parent
        if parent == self.root:
            return
        parent.mkdir(mode=0o700, exist_ok=True)
        st = parent.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise FailedPrecondition(
                f"{parent} must be a directory owned by this user with mode 0700"
            )

    @property
    def lock(self) -> Path:
        return self.root / "agent.lock"

    @property
    def pid(self) -> Path:
        return self.root / "agent.pid"

    @property
    def log(self) -> Path:
        return self.root / "agent.log"

    @property
    def ports(self) -> Path:
        """Written by a running agent: the addresses it actually bound."""
        return self.root / "agent.ports"

    def exists(self) -> bool:
        """True when this home has been initialised."""
        return self.config.exists() and self.db.exists()

    def require(self) -> None:
        """Raise a clear error when the home was never initialised."""
        if not self.exists():
            raise FailedPrecondition(
                f"{self.root} is not an agent home: run `zmesh init` or `zmesh join` first"
            )

    def running_pid(self) -> int | None:
        """The pid of the agent running on this home, or None."""
        if not self.lock.exists():
            return None
        with open(self.lock, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return int(self.pid.read_text().strip())
                except (OSError, ValueError):
                    return -1
            fcntl.flock(fh, fcntl.LOCK_UN)
        return None


class HomeLock:
    """Exclusive lock held for the whole life of a running agent."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._fh: object | None = None

    def acquire(self) -> None:
        """Take the lock and write the pid file, or raise if another agent runs here."""
        self.home.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.home.lock, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            pid = self.home.running_pid()
            raise AlreadyExists(
                f"an agent is already running on {self.home.root} (pid {pid})"
            ) from None
        self._fh = fh
        tmp = self.home.pid.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(self.home.pid)

    def release(self) -> None:
        """Remove the pid file and drop the lock (idempotent)."""
        fh = self._fh
        if fh is None:
            return
        self._fh = None
        for p in (self.home.pid, self.home.ports):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        fcntl.flock(fh, fcntl.LOCK_UN)  # type: ignore[arg-type]
        fh.close()  # type: ignore[attr-defined]
