"""Output references: one activity's output dir used as another one's input.

``act.output_dir`` is an :class:`OutputRef`, a ``str`` whose value is
``"@output:<activity>"`` (optionally ``/subpath``). The monitor resolves it at run
time to wherever the activity ran, and using it as an input adds a DAG edge.
"""

from __future__ import annotations

import re

from zambeze_mesh.errors import InvalidInput

__all__ = ["MAX_NAME", "OUTPUT_REF_PREFIX", "OutputRef", "check_name", "valid_name"]

# The same rules as the monitor's (zambeze_mesh.scheduling.model, checked by a test);
# copied so that ``import zambeze_mesh`` does not pull in the scheduler and networkx.
MAX_NAME = 128
MAX_RETRIES = 10
MAX_FUNCTION_BYTES = 16 * 1024 * 1024
MONITOR = "__monitor__"
OUTPUT_REF_PREFIX = "@output:"
_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_. \-]{0,126}[A-Za-z0-9_.\-])?")


def valid_name(name: str) -> bool:
    """True for 1-128 characters of ``[A-Za-z0-9_.-]`` and inner spaces."""
    return bool(_NAME_RE.fullmatch(name)) and name != MONITOR and name not in (".", "..")


#: How a valid activity name is described to users (one wording everywhere).
NAME_RULE = "letters, digits, '_', '.', '-' and spaces (not at either end)"


def check_name(name: object, what: str = "activity name") -> str:
    """Return ``name`` if it is a valid activity name, else raise :class:`InvalidInput`.

    Valid names have 1-128 characters of ``[A-Za-z0-9_.-]`` and inner spaces (not
    at either end); the message suggests a fixed spelling.
    """
    if not isinstance(name, str):
        raise InvalidInput(f"{what} must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidInput(f"{what} is empty")
    if not valid_name(name):
        hint = re.sub(r"[^A-Za-z0-9_. \-]+", "_", name.strip()).strip("_.- ")[:MAX_NAME]
        suggestion = f"; try {hint!r}" if hint and valid_name(hint) else ""
        raise InvalidInput(
            f"{what} {name[:MAX_NAME]!r} is invalid: use 1-{MAX_NAME} characters of "
            f"{NAME_RULE} (and not {MONITOR!r}){suggestion}"
        )
    return name


class OutputRef(str):
    """A reference to the output directory of the activity named ``activity``.

    Its string value is ``"@output:<activity>[/subpath]"``. Use ``ref / "sub"`` to
    point inside it. Pass it in another activity's ``data_uris`` (or as a
    transfer ``source``) to consume that output.
    """

    activity: str
    subpath: str

    def __new__(cls, activity: str, subpath: str = "") -> OutputRef:
        check_name(activity)
        sub = subpath.strip("/")
        if ".." in sub.split("/"):
            raise InvalidInput(f"'..' is not allowed in an output reference: {subpath!r}")
        value = OUTPUT_REF_PREFIX + activity + (f"/{sub}" if sub else "")
        obj = super().__new__(cls, value)
        obj.activity = activity
        obj.subpath = sub
        return obj

    def __truediv__(self, sub: str) -> OutputRef:
        """``ref / "models"`` -> ``@output:<activity>/models``."""
        if not isinstance(sub, str):
            return NotImplemented
        joined = f"{self.subpath}/{sub.strip('/')}" if self.subpath else sub
        return OutputRef(self.activity, joined)

    def __repr__(self) -> str:
        where = f", subpath {self.subpath!r}" if self.subpath else ""
        return f"<OutputRef {str(self)!r}: output dir of activity {self.activity!r}{where}>"

    def __reduce__(self) -> tuple[type[OutputRef], tuple[str, str]]:
        return (OutputRef, (self.activity, self.subpath))
