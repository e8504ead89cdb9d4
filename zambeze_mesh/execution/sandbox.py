"""Where activities run: a view of the machine without the agent's secrets.

An activity runs code a client sent, as the agent's user. Without a sandbox it
could read the agent's key files, its SQLite store, its Unix socket and the working
dirs of other campaigns. Two mechanisms keep those out of reach:

* **bubblewrap** (``bwrap``): every activity process (and every warm function
  worker) starts in its own mount and pid namespace. The root file system is bound
  read-only; ``/tmp`` and ``/dev`` are private; the agent home is replaced by an
  empty ``tmpfs``, into which only the agent's data dir (read-only, without its
  ``runs/`` tree) and the activity's own dirs (read-write) are bound back. Exported
  data roots stay readable. The agent's own processes are not visible (new pid
  namespace), so ``/proc/<agent>/root`` cannot be used to go around the mounts.
* **run_as**: activities run as another (unprivileged) user through ``setpriv``.
  The home is made traversable (0711) but not listable; the key dir (0700), the key
  files, the store and the socket (0600) stay the agent's alone. The activity's dirs
  are handed to that user. This needs an agent running as root. Without bubblewrap,
  campaigns run as that one user can read each other's dirs.

Both may be combined. :class:`Sandbox` is built once per agent from its config
(``sandbox = "auto" | "bwrap" | "none"``, ``run_as = "user"``) and gives each run
a :class:`Jail`: the argv prefix to run a process inside, and a key saying which
runs may share a warm worker (same binds). The runs tree is
``runs/<owner>/<monitor>/<campaign>/<activity>``: a run reads its campaign's dir, a
warm function worker its owner's (``sandbox_functions = "owner"``, the default), its
campaign's (``"campaign"``) or the whole tree (``"shared"``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from zambeze_mesh.errors import FailedPrecondition, InvalidInput

log = logging.getLogger(__name__)

MODES = ("auto", "bwrap", "none")
#: Environment variables never passed to an activity.
SECRET_ENV = ("ZMESH_TOKEN", "ZMESH_CA_PASSPHRASE_FILE", "ZMESH_CA_PASSPHRASE")


@functools.cache
def bwrap_problem() -> str:
    """Why bubblewrap cannot be used here ("" when it works)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "bwrap is not installed (Debian/Ubuntu package: bubblewrap)"
    try:
        probe = subprocess.run(
            [exe, *_BASE_ARGS, "--", "true"], capture_output=True, timeout=20, text=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap does not run: {exc}"
    if probe.returncode != 0:
        return f"bwrap does not work here: {probe.stderr.strip()[:300]}"
    return ""


_BASE_ARGS = (
    "--die-with-parent",
    "--unshare-pid",
    "--unshare-ipc",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--tmpfs",
    "/tmp",
    "--tmpfs",
    "/var/tmp",
)


def scrub_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the agent's own secrets (tokens, passphrase locations)."""
    for name in SECRET_ENV:
        env.pop(name, None)
    return env


@dataclass(frozen=True)
class Jail:
    """How one run (or one warm worker) is confined.

    ``ro`` are paths bound read-only, then ``rw`` directories bound read-write;
    ``key`` is equal for runs that may share a warm function worker. ``spare``
    asks a worker pool to keep one more worker of this key started ahead (the
    jail is shared by many runs to come).
    """

    bwrap: tuple[str, ...]
    run_as: tuple[str, ...]
    rw: tuple[str, ...]
    ro: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None
    spare: bool = False

    @property
    def key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Runs with the same key see the same files."""
        return (self.ro, self.rw)

    def prefix(self, extra_rw: Iterable[Path] = (), cwd: Path | None = None) -> list[str]:
        """argv to put before the command (``extra_rw``: more read-write dirs)."""
        argv: list[str] = []
        if self.bwrap:
            argv.extend(self.bwrap)
            for path in self.ro:
                argv.extend(("--ro-bind-try", path, path))
            for path in (*self.rw, *(str(p) for p in extra_rw)):
                argv.extend(("--bind", path, path))
            if cwd is not None:
                argv.extend(("--chdir", str(cwd)))
            argv.append("--")
        argv.extend(self.run_as)
        return argv

    def hand_over(self, *paths: Path) -> None:
        """Give the run_as user the directories it must write (no-op without run_as)."""
        if self.uid is None or self.gid is None:
            return
        for path in paths:
            try:
                st = path.stat()
                if st.st_uid != self.uid:
                    os.chown(path, self.uid, self.gid)
            except OSError as exc:
                log.warning("cannot hand %s to uid %d: %s", path, self.uid, exc)


class Sandbox:
    """An agent's sandbox policy (see the module docstring)."""

    def __init__(
        self,
        mode: str,
        *,
        home: Path,
        data_dir: Path,
        exported_roots: Sequence[Path] = (),
        run_as: str = "",
    ) -> None:
        if mode not in MODES:
            raise InvalidInput(f"sandbox must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.home = home.absolute()
        self.data_dir = data_dir.absolute()
        self.exported_roots = [p.absolute() for p in exported_roots]
        self.uid: int | None = None
        self.gid: int | None = None
        self._run_as: tuple[str, ...] = ()
        if run_as:
            self._setup_run_as(run_as)
        problem = bwrap_problem() if mode != "none" else "sandbox = none in the config"
        if mode == "bwrap" and problem:
            raise FailedPrecondition(f"sandbox = bwrap, but {problem}")
        self.uses_bwrap = not problem
        self._bwrap_head = self._bwrap_args() if self.uses_bwrap else ()
        self.warning = ""
        if not self.uses_bwrap and not self._run_as:
            self.warning = (
                f"activities are NOT sandboxed ({problem}): any activity can read this "
                "agent's keys, store and other campaigns' files; install bubblewrap or "
                "set run_as in config.toml"
            )

    def _setup_run_as(self, user: str) -> None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise InvalidInput(f"run_as user {user!r} does not exist") from None
        if pw.pw_uid == 0:
            raise InvalidInput("run_as must name an unprivileged user, not root")
        if os.geteuid() != 0:
            raise FailedPrecondition("run_as needs an agent running as root")
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise FailedPrecondition("run_as needs setpriv (util-linux)")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        # The pdeath signal is cleared by the credential change: set it again after.
        self._run_as = (
            setpriv,
            f"--reuid={pw.pw_uid}",
            f"--regid={pw.pw_gid}",
            "--init-groups",
            "--pdeathsig",
            "KILL",
            "--",
        )
        # That user must reach the activity dirs below the home, and nothing else
        # there: the home becomes traversable but not listable; keys, store and
        # socket keep their owner-only modes.
        if stat.S_IMODE(self.home.stat().st_mode) == 0o700:
            os.chmod(self.home, 0o711)

    def _bwrap_args(self) -> tuple[str, ...]:
        exe = shutil.which("bwrap")
        assert exe is not None
        argv: list[str] = [exe, *_BASE_ARGS]
        for path in software_binds(self.home):  # Python itself, when it lives in /tmp
            argv.extend(("--ro-bind", str(path), str(path)))
        for root in self.exported_roots:  # (a root around the home: the home is hidden below)
            if root.is_dir() and not _inside(root, self.home):
                argv.extend(("--ro-bind", str(root), str(root)))
        argv.extend(("--tmpfs", str(self.home)))
        runs = self.data_dir / "runs"
        with contextlib.suppress(OSError):  # a read-only data dir has no runs to hide
            runs.mkdir(parents=True, exist_ok=True)  # the tmpfs below needs a mount point
        if _inside(self.data_dir, self.home):
            argv.extend(("--ro-bind", str(self.data_dir), str(self.data_dir)))
            keys = self.home / "keys"
            for root in self.exported_roots:  # exported roots inside the home
                if (
                    root.is_dir()
                    and root != self.home
                    and _inside(root, self.home)
                    and not _inside(root, self.data_dir)
                    and not _inside(root, keys)
                ):
                    argv.extend(("--ro-bind", str(root), str(root)))
        if runs.is_dir():
            argv.extend(("--tmpfs", str(runs)))
        return tuple(argv)

    @property
    def kind(self) -> str:
        """``"bwrap"``, ``"run_as"``, ``"bwrap+run_as"`` or ``"none"``."""
        parts = [p for p, on in (("bwrap", self.uses_bwrap), ("run_as", bool(self._run_as))) if on]
        return "+".join(parts) or "none"

    def describe(self) -> str:
        """One line for logs and ``zmesh agent status``."""
        if self.warning:
            return f"none: {self.warning}"
        user = f" (as uid {self.uid})" if self.uid is not None else ""
        return f"{self.kind}{user}: activities see neither keys nor store nor other campaigns"

    def for_run(
        self, scope: str, rw: Iterable[Path], ro: Iterable[Path] = (), *, spare: bool = False
    ) -> Jail | None:
        """The jail of a run (None when activities are not confined).

        ``scope`` is the part of the runs tree the run may read, relative to
        ``<data dir>/runs``: its campaign's dir (outputs of its other activities),
        or for shipped functions its owner's dir, ``""`` for every campaign's.
        ``rw`` are the directories it writes; ``ro`` the inputs and script it reads.
        A read-only path inside the agent home but outside its data dir, or inside
        the runs tree but outside ``scope``, is not bound (it stays invisible).
        ``spare``: see :class:`Jail`.
        """
        if not self.uses_bwrap and not self._run_as:
            return None
        runs = self.data_dir / "runs"
        mine = runs / scope if scope else runs
        if not _inside(Path(os.path.normpath(mine)), runs):
            raise InvalidInput(f"sandbox scope {scope!r} is outside the runs dir")
        readable: set[str] = {str(mine)}
        for p in ro:
            real = Path(os.path.realpath(p))
            if _inside(real, self.home) and not _inside(real, self.data_dir):
                continue
            if _inside(real, runs) and not _inside(real, mine):
                continue
            readable.add(str(real))
        return Jail(
            self._bwrap_head,
            self._run_as,
            _outermost(str(Path(p).absolute()) for p in rw),
            _outermost(readable),
            self.uid,
            self.gid,
            spare,
        )


def _outermost(paths: Iterable[str]) -> tuple[str, ...]:
    """Sorted paths without those inside another one of them."""
    out: list[str] = []
    for d in sorted(set(paths)):
        if not any(_inside(Path(d), Path(o)) for o in out):
            out.append(d)
    return tuple(out)


#: Directories the sandbox replaces with private, empty ones.
PRIVATE_DIRS = (Path("/tmp"), Path("/var/tmp"))


@functools.cache
def _software_candidates() -> tuple[Path, ...]:
    """What a worker needs to start and import: the Python installation (a virtualenv
    included), this package, and the packages and modules at the top of each import
    path entry (never hidden entries such as ``.zmesh-demo``: only code is exposed)."""
    found = {
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(sys.exec_prefix),
        Path(os.path.realpath(sys.executable)).parent,
        Path(__file__).resolve().parents[1],  # this package
    }
    prefixes = [p.resolve() for p in (Path(sys.prefix), Path(sys.base_prefix))]
    for entry in sys.path:
        root = Path(entry or os.getcwd()).resolve()
        if not root.is_dir() or any(_inside(root, p) for p in prefixes):
            continue
        if not any(_inside(root, d) for d in PRIVATE_DIRS):
            continue
        with contextlib.suppress(OSError):
            for child in root.iterdir():
                if child.name.startswith((".", "__")):
                    continue
                if (child / "__init__.py").is_file() or child.suffix == ".py":
                    found.add(child)
    return tuple(sorted(p.resolve() for p in found if p.exists()))


def software_binds(home: Path) -> list[Path]:
    """Code the private ``/tmp`` and ``/var/tmp`` would hide from activities (a venv or
    checkout under ``/tmp``), to bind back read-only; never the agent home or anything in
    it (it is hidden again afterwards anyway)."""
    home = home.resolve()
    return [
        p
        for p in _software_candidates()
        if any(_inside(p, d) for d in PRIVATE_DIRS) and not _inside(p, home)
    ]


def _inside(path: Path, root: Path) -> bool:
    """True when ``path`` is ``root`` or below it."""
    return path == root or root in path.parents
