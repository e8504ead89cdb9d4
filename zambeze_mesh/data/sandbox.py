"""Which paths an agent may serve and accept.

A :class:`Sandbox` maps a requested path to a real file or directory under the
agent's data directory (``@agentdir``) or one of its exported roots, and refuses
anything that could leave them: ``..`` components, symlinks whose target leaves
the root (every component is checked, not only the last), absolute paths outside
the roots, and anything but regular files and directories (devices, FIFOs,
sockets). Readers should still open files with :func:`open_regular`, which
refuses a symlink swapped in after the check and re-checks the file type.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from zambeze_mesh.errors import FailedPrecondition, InvalidInput, NotFound, NotPermitted

__all__ = ["MAX_COMPONENT", "MAX_PATH", "Sandbox", "check_path_text", "open_regular"]

MAX_PATH = 4096
"""Longest path (in bytes, UTF-8) accepted."""
MAX_COMPONENT = 255
"""Longest single path component (in bytes, UTF-8) accepted."""


def check_path_text(path: str) -> None:
    """Refuse NUL bytes, over-long paths or components and ``..`` components.

    NUL bytes and over-long paths raise :class:`InvalidInput`; ``..`` raises
    :class:`NotPermitted`.
    """
    if "\x00" in path:
        raise InvalidInput("path contains a NUL byte")
    n = len(path.encode("utf-8", "surrogateescape"))
    if n > MAX_PATH:
        raise InvalidInput(f"path is {n} bytes long; the limit is {MAX_PATH}")
    for part in PurePosixPath(path).parts:
        if part == "..":
            raise NotPermitted(f"'..' is not allowed in paths: {path!r}")
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
            raise InvalidInput(f"a component of {path!r} is longer than {MAX_COMPONENT} bytes")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _kind_ok(mode: int) -> bool:
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _kind_name(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file or directory"


class _Root:
    """An allowed root: its absolute (lexical) form and its real path."""

    def __init__(self, path: Path) -> None:
        self.lexical = os.path.abspath(path)
        self.real = os.path.realpath(path)

    def relative(self, absolute: str) -> str | None:
        """Path of ``absolute`` relative to this root, or None if it is not under it."""
        for base in (self.lexical, self.real):
            if _inside(absolute, base):
                return os.path.relpath(absolute, base) if absolute != base else ""
        return None


class Sandbox:
    """Path checks for serving (:meth:`resolve`) and receiving (:meth:`resolve_for_write`).

    ``agent_dir`` is ``@agentdir``: relative paths are resolved under it.
    ``roots`` are the exported roots: absolute paths must lie in one of them or in
    ``agent_dir``.
    """

    def __init__(self, agent_dir: Path, roots: Iterable[Path] = ()) -> None:
        self.agent_dir = Path(os.path.abspath(agent_dir))
        self.roots = [Path(os.path.abspath(r)) for r in roots]
        self._agent_root = _Root(self.agent_dir)
        self._roots = [self._agent_root, *(_Root(r) for r in self.roots)]

    # -- serving -------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """The real path to serve for ``path`` (a regular file or a directory).

        Raises :class:`NotPermitted` (with the reason) for paths that leave the
        sandbox or name special files, :class:`InvalidInput` for NUL bytes and
        over-long paths, :class:`NotFound` when nothing is there.
        """
        last: NotPermitted | None = None
        for root, rel in self._candidates(path):
            try:
                real = self._walk(root, rel, path)
            except NotPermitted as exc:
                last = exc
                continue
            mode = os.stat(real).st_mode
            if not _kind_ok(mode):
                raise NotPermitted(f"{path!r} is {_kind_name(mode)}; only files and directories")
            return Path(real)
        assert last is not None
        raise last

    def root_of(self, real: Path) -> Path:
        """The real path of the allowed root that contains ``real`` (a resolved path)."""
        for root in self._roots:
            if _inside(str(real), root.real):
                return Path(root.real)
        raise NotPermitted(f"{str(real)!r} is outside the agent directory and exported roots")

    # -- receiving -----------------------------------------------------------------

    def resolve_for_write(self, path: str) -> Path:
        """Where to write a pushed object named ``path``; creates missing parents.

        The same checks as :meth:`resolve` apply to every existing component.
        Refuses to replace a directory with a file (:class:`FailedPrecondition`),
        to write over special files, and to write at a root itself.
        """
        cands = self._candidates(path)
        root, rel = cands[0]
        parts = [p for p in PurePosixPath(rel).parts if p not in ("", ".")]
        if not parts:
            raise InvalidInput(f"{path!r} names a root directory, not a file inside it")
        parent = self._ensure_dir(root, parts[:-1], path)
        dest = os.path.join(parent, parts[-1])
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return Path(dest)
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(dest)
            if not _inside(target, root.real):
                raise NotPermitted(f"{path!r} is a symlink that leads outside its root")
            # Writing replaces the link itself (os.replace), never its target.
            return Path(dest)
        if stat.S_ISDIR(st.st_mode):
            raise FailedPrecondition(f"{path!r} is a directory; refusing to replace it with a file")
        if not stat.S_ISREG(st.st_mode):
            raise NotPermitted(f"{path!r} is {_kind_name(st.st_mode)}; refusing to write there")
        return Path(dest)

    # -- internals -----------------------------------------------------------------

    def _candidates(self, path: str) -> list[tuple[_Root, str]]:
        if not isinstance(path, str):
            raise InvalidInput(f"path must be a string, not {type(path).__name__}")
        check_path_text(path)
        if not os.path.isabs(path):
            return [(self._agent_root, path)]
        norm = os.path.normpath(path)
        out: list[tuple[_Root, str]] = []
        for root in self._roots:
            rel = root.relative(norm)
            if rel is not None:
                out.append((root, rel))
        if not out:
            raise NotPermitted(f"{path!r} is outside the agent directory and exported roots")
        # Innermost root first: its containment check is the strictest that can pass.
        out.sort(key=lambda c: -len(c[0].real))
        return out

    def _walk(self, root: _Root, rel: str, shown: str) -> str:
        """Walk ``rel`` below ``root``, checking that every prefix stays inside it."""
        if not os.path.isdir(root.real):
            raise NotFound(f"{shown!r}: the root it lies in does not exist")
        current = root.real
        for part in PurePosixPath(rel).parts:
            if part in ("", ".", "/"):
                continue
            nxt = os.path.join(current, part)
            try:
                st = os.lstat(nxt)
            except FileNotFoundError:
                raise NotFound(f"{shown!r} does not exist") from None
            except NotADirectoryError:
                raise NotFound(f"{shown!r} does not exist (a parent is not a directory)") from None
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.path.realpath(nxt, strict=True)
                except (FileNotFoundError, NotADirectoryError):
                    raise NotFound(f"{shown!r} is a dangling symlink") from None
                except OSError as exc:  # ELOOP and friends
                    raise NotPermitted(f"{shown!r}: cannot resolve symlink ({exc})") from None
                if not _inside(target, root.real):
                    raise NotPermitted(f"{shown!r} goes through a symlink that leaves its root")
                nxt = target
            current = nxt
        return current

    def _ensure_dir(self, root: _Root, parts: Sequence[str], shown: str) -> str:
        """Walk/create the parent directories of a write target inside ``root``."""
        if not os.path.isdir(root.real):
            os.makedirs(root.real, exist_ok=True)
        current = root.real
        for part in parts:
            nxt = os.path.join(current, part)
            try:
                os.mkdir(nxt, 0o755)
            except FileExistsError:
                pass
            st = os.lstat(nxt)
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(nxt)
                if not _inside(target, root.real):
                    raise NotPermitted(f"{shown!r} goes through a symlink that leaves its root")
                nxt = target
                st = os.stat(nxt)
            if not stat.S_ISDIR(st.st_mode):
                raise FailedPrecondition(f"{shown!r}: a parent component is not a directory")
            current = nxt
        return current


def open_regular(path: Path) -> int:
    """Open ``path`` read-only without following a final symlink; must be a regular file.

    Returns a file descriptor. Closes the race where a checked file is swapped for a
    symlink or a FIFO between :meth:`Sandbox.resolve` and the read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFound(f"{str(path)!r} does not exist") from None
    except OSError as exc:
        raise NotPermitted(f"cannot open {str(path)!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotPermitted(f"{str(path)!r} is {_kind_name(st.st_mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
