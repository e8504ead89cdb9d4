"""Transfer-method negotiation.

The requester lists the methods it supports in its order of preference, the
holder lists the ones it supports; the first of the requester's preferences the
holder supports wins. ``grpc-stream`` is built in on every agent, so the
negotiation always succeeds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from zambeze_mesh.errors import InvalidInput

__all__ = [
    "DEFAULT_METHODS",
    "GRPC_STREAM",
    "KNOWN_METHODS",
    "MAX_METHODS",
    "RSYNC",
    "TLS_STREAM",
    "choose_method",
    "normalize_methods",
]

GRPC_STREAM = "grpc-stream"
"""Chunked, resumable, sha256-checked streaming over the Data service (always available)."""
RSYNC = "rsync"
"""rsync over ssh; parameters travel in ``OfferResponse.method_params``."""
TLS_STREAM = "tls-stream"
"""Bulk bytes over a TLS data port beside gRPC (same identities, grant, framing, resume)."""
KNOWN_METHODS: tuple[str, ...] = (TLS_STREAM, GRPC_STREAM, RSYNC)
DEFAULT_METHODS: tuple[str, ...] = (TLS_STREAM, GRPC_STREAM)
MAX_METHODS = 32
"""Most methods a single list may name."""

_METHOD_RE = re.compile(r"[a-z0-9][a-z0-9.+_-]{0,63}")


def normalize_methods(methods: Iterable[str]) -> list[str]:
    """Validate and de-duplicate a method list (order kept), appending ``grpc-stream``.

    Raises :class:`InvalidInput` for malformed names or more than ``MAX_METHODS``.
    """
    out: list[str] = []
    for i, m in enumerate(methods):
        if i >= MAX_METHODS:
            raise InvalidInput(f"too many transfer methods (limit {MAX_METHODS})")
        if not isinstance(m, str) or not _METHOD_RE.fullmatch(m):
            raise InvalidInput(f"bad transfer method name {m!r}")
        if m not in out:
            out.append(m)
    if GRPC_STREAM not in out:
        out.append(GRPC_STREAM)
    return out


def choose_method(requester_prefs: Iterable[str], holder_methods: Iterable[str]) -> str:
    """The first of ``requester_prefs`` that the holder supports (``grpc-stream`` if none)."""
    prefs = normalize_methods(requester_prefs)
    holder = set(normalize_methods(holder_methods))
    for m in prefs:
        if m in holder:
            return m
    return GRPC_STREAM  # pragma: no cover - both lists always contain it
