"""Data URIs and @-escapes.

Forms accepted by :func:`parse_uri`:

* ``NAME://path`` names data held by agent ``NAME`` (the paper's ``B://file_2``).
  A relative path lies under that agent's ``@agentdir``; an absolute one
  (``NAME:///abs/path``) must lie in one of the agent's exported roots, which the
  holder checks when serving. ``NAME://@agentdir/x`` is the same as ``NAME://x``.
* ``file:///abs`` or ``file://rel`` is local to the running activity; relative
  paths are relative to its working directory.
* ``@output:<activity>[/subpath]`` refers to the output directory of another
  activity, resolved at run time to wherever that activity ran.
* A bare path starting with an escape (``@agentdir/images``, ``@workingdir``,
  ``@outputdir/models``) is a local path, like ``file://``.

Escapes are recognised only at the start of a path; :func:`expand_escapes` turns
them into concrete directories.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from zambeze_mesh.errors import InvalidInput

__all__ = [
    "AGENTDIR",
    "ESCAPES",
    "MAX_URI_LENGTH",
    "OUTPUTDIR",
    "WORKINGDIR",
    "DataUri",
    "expand_escapes",
    "parse_uri",
    "split_escape",
]

MAX_URI_LENGTH = 4096
"""Longest URI (in characters) that :func:`parse_uri` accepts."""

AGENTDIR = "@agentdir"
WORKINGDIR = "@workingdir"
OUTPUTDIR = "@outputdir"
ESCAPES: tuple[str, ...] = (AGENTDIR, WORKINGDIR, OUTPUTDIR)

Scheme = Literal["agent", "file", "output"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_AGENT_URI_RE = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)://(?P<path>.*)", re.DOTALL)
_OUTPUT_PREFIX = "@output:"
_MAX_NAME = 253


@dataclass(frozen=True, slots=True)
class DataUri:
    """A parsed data URI.

    ``scheme`` is ``"agent"`` (``agent`` is set), ``"file"`` (local to the running
    activity) or ``"output"`` (``activity`` is set, ``path`` is the optional subpath).
    ``path`` keeps any leading escape, e.g. ``"@agentdir/images"``.
    """

    scheme: Scheme
    path: str
    agent: str | None = None
    activity: str | None = None

    @property
    def is_absolute(self) -> bool:
        """Whether the path is absolute (for ``agent``: must lie in an exported root)."""
        return self.path.startswith("/")

    @property
    def escape(self) -> str | None:
        """The leading escape of the path, if any."""
        return split_escape(self.path)[0]

    def __str__(self) -> str:
        if self.scheme == "agent":
            return f"{self.agent}://{self.path}"
        if self.scheme == "output":
            return f"{_OUTPUT_PREFIX}{self.activity}" + (f"/{self.path}" if self.path else "")
        if split_escape(self.path)[0] is not None:
            return self.path
        return f"file://{self.path}"


def split_escape(path: str) -> tuple[str | None, str]:
    """Split ``"@agentdir/a/b"`` into ``("@agentdir", "a/b")``.

    Returns ``(None, path)`` when the path starts with no escape. Raises
    :class:`InvalidInput` for an unknown ``@word`` at the start of a path.
    """
    if not path.startswith("@"):
        return None, path
    head, _, rest = path.partition("/")
    if head in ESCAPES:
        return head, rest
    raise InvalidInput(
        f"unknown escape {head!r} at the start of {path!r}; known escapes are {', '.join(ESCAPES)}"
    )


def _check_common(s: str, what: str) -> None:
    if "\x00" in s:
        raise InvalidInput(f"{what} contains a NUL byte")
    if len(s) > MAX_URI_LENGTH:
        raise InvalidInput(f"{what} is {len(s)} characters long; the limit is {MAX_URI_LENGTH}")


def _check_path(path: str, uri: str) -> None:
    """Refuse paths with ``..`` components (they could step out of a directory)."""
    if ".." in PurePosixPath(path).parts:
        raise InvalidInput(f"'..' is not allowed in data paths: {uri!r}")


def _parse_output(s: str) -> DataUri:
    rest = s[len(_OUTPUT_PREFIX) :]
    activity, _, sub = rest.partition("/")
    if not activity:
        raise InvalidInput(f"missing activity name in {s!r}; expected @output:<activity>[/path]")
    if not _NAME_RE.fullmatch(activity) or len(activity) > _MAX_NAME:
        raise InvalidInput(
            f"bad activity name {activity!r} in {s!r}; use letters, digits, '.', '_' or '-'"
        )
    sub = sub.strip("/")
    if sub.startswith("@"):
        raise InvalidInput(f"escapes are not allowed after @output:<activity>/ in {s!r}")
    _check_path(sub, s)
    return DataUri(scheme="output", path=sub, activity=activity)


def _parse_local(path: str, s: str) -> DataUri:
    if not path:
        raise InvalidInput(f"empty path in {s!r}")
    split_escape(path)
    _check_path(path, s)
    return DataUri(scheme="file", path=path)


def parse_uri(s: str) -> DataUri:
    """Parse a data URI (see the module docstring for the accepted forms).

    Raises :class:`InvalidInput` with a message naming the problem for malformed
    URIs, NUL bytes, ``..`` components and URIs longer than 4096 characters.
    """
    if not isinstance(s, str):
        raise InvalidInput(f"a data URI must be a string, not {type(s).__name__}")
    _check_common(s, "data URI")
    if not s:
        raise InvalidInput("empty data URI")
    if s.startswith(_OUTPUT_PREFIX):
        return _parse_output(s)
    if s.startswith("@"):
        return _parse_local(s, s)
    if s.startswith("file://"):
        return _parse_local(s[len("file://") :], s)
    m = _AGENT_URI_RE.fullmatch(s)
    if m is None:
        if "://" in s:
            name = s.split("://", 1)[0]
            raise InvalidInput(
                f"bad agent name {name!r} in {s!r}; names start with a letter or digit "
                "and contain only letters, digits, '.', '_' or '-'"
            )
        raise InvalidInput(
            f"not a data URI: {s!r}; expected AGENT://path, file://path, "
            "@output:<activity>[/path] or a path starting with @agentdir, @workingdir "
            "or @outputdir"
        )
    name, path = m.group("name"), m.group("path")
    if name.lower() == "file":
        return _parse_local(path, s)
    if len(name) > _MAX_NAME:
        raise InvalidInput(f"agent name in {s!r} is longer than {_MAX_NAME} characters")
    if not path:
        raise InvalidInput(f"empty path in {s!r}; name a file or directory on agent {name!r}")
    esc, rest = split_escape(path)
    if esc is not None and esc != AGENTDIR:
        raise InvalidInput(
            f"{esc} is local to a running activity and cannot be used in an agent URI: {s!r}"
        )
    _check_path(path, s)
    if esc == AGENTDIR:
        # NAME://@agentdir/x is NAME://x: relative paths already live under @agentdir.
        path = rest.lstrip("/") or "."
    return DataUri(scheme="agent", path=path, agent=name)


def expand_escapes(
    path: str,
    *,
    agentdir: Path | None,
    workingdir: Path | None = None,
    outputdir: Path | None = None,
) -> Path:
    """Replace a leading ``@agentdir`` / ``@workingdir`` / ``@outputdir`` with a directory.

    A path without an escape is returned unchanged (as a :class:`Path`). Using an
    escape whose directory is ``None`` raises :class:`InvalidInput`, as does a
    ``..`` component in the rest of the path.
    """
    _check_common(path, "path")
    esc, rest = split_escape(path)
    if esc is None:
        return Path(path)
    _check_path(rest, path)
    base = {AGENTDIR: agentdir, WORKINGDIR: workingdir, OUTPUTDIR: outputdir}[esc]
    if base is None:
        raise InvalidInput(f"{esc} is not defined here (in {path!r})")
    rest = rest.lstrip("/")
    return base / rest if rest else base
