"""Which parameters go into provenance, and how a shipped function is described.

**The secret rule.** A parameter whose *name* looks like a credential is left out of
every provenance record: environment variables (``ShellSpec.env``, ``PythonSpec.env``)
and keyword arguments of shipped functions whose name contains, in any case,
``secret``, ``token``, ``password``, ``passwd``, ``credential``, ``apikey`` /
``api_key`` / ``api-key``, ``private_key`` or ``auth`` (see :data:`SECRET_NAME`).
Their values never leave the client for a function's keyword arguments (sent as
``<redacted>``) and never enter a crate. Values passed positionally or inside a
shell command line cannot be recognized: keep secrets in such env variables.
"""

from __future__ import annotations

import inspect
import re
import tokenize
from collections.abc import Callable, Mapping, Sequence
from typing import Any

SECRET_NAME = re.compile(
    r"secret|token|passw(or)?d|credential|api[-_]?key|private[-_]?key|auth", re.IGNORECASE
)
REDACTED = "<redacted>"
MAX_PARAMS = 64
MAX_REPR = 1024
MAX_SOURCE = 64 * 1024


def is_secret(name: str) -> bool:
    """True when a parameter called ``name`` is kept out of provenance records."""
    return bool(SECRET_NAME.search(name))


def public_params(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` without the entries whose name :func:`is_secret` (nor redacted ones)."""
    return {k: v for k, v in values.items() if not is_secret(k) and v != REDACTED}


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not stop a submission
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def function_info(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any] | None
) -> tuple[str, str, dict[str, str]]:
    """``(module:qualname, source or "", params)`` of a shipped function call.

    ``params`` maps ``args[i]`` and keyword names to a bounded ``repr`` of each value
    (at most :data:`MAX_PARAMS`), secret-looking keyword names to ``<redacted>``.
    """
    name, source = _described(func)
    params: dict[str, str] = {}
    for i, value in enumerate(args):
        if len(params) >= MAX_PARAMS:
            break
        params[f"args[{i}]"] = _short_repr(value)
    for key, value in (kwargs or {}).items():
        if len(params) >= MAX_PARAMS:
            break
        params[str(key)[:256]] = REDACTED if is_secret(str(key)) else _short_repr(value)
    return name, source, params


_DESCRIBED: dict[object, tuple[str, str]] = {}


def _described(func: Callable[..., Any]) -> tuple[str, str]:
    """``(module:qualname, source)`` of a function, remembered per code object (a big
    campaign ships the same function thousands of times; finding source is slow)."""
    key = getattr(func, "__code__", None) or func
    try:
        found = _DESCRIBED.get(key)
    except TypeError:  # an unhashable callable
        key, found = None, None
    if found is not None:
        return found
    module = getattr(func, "__module__", None) or ""
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", "") or repr(func)
    name = (f"{module}:{qual}" if module else qual)[:1024]
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        # no file, a builtin, or a "file" that is not the source (code compiled from a
        # string under another file's name): the crate goes without the source
        source = ""
    if len(source) > MAX_SOURCE:
        source = ""
    if key is not None:
        if len(_DESCRIBED) > 1024:
            _DESCRIBED.clear()
        _DESCRIBED[key] = (name, source)
    return name, source
