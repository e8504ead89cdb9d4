"""Lazy package exports: a package names what it re-exports, and each name's module is
imported on first use, so importing one pure module of a package does not load the
I/O machinery (grpc, sqlite3, networkx) its siblings need."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str,
    where: Mapping[str, str],
    namespace: dict[str, Any],
    submodules: frozenset[str] = frozenset(),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    ``where`` maps an exported name to the submodule that defines it; ``submodules``
    are submodules reachable as attributes. A name is imported once, then cached in
    the package's ``namespace`` (its ``globals()``).
    """

    def getattr_(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted([*namespace, *where, *submodules])

    return getattr_, dir_
