"""Conversions between the data library's dataclasses and ``zambeze_mesh.v1`` messages.

Used by the ``Data`` servicer and by :class:`~zambeze_mesh.data.client.DataClient`,
so wire types stay at the edge.
"""

from __future__ import annotations

from collections.abc import Iterable

from zambeze_mesh.data.catalog import ManifestEntry, ObjectInfo
from zambeze_mesh.v1 import data_pb2

__all__ = ["info_from_pb", "info_to_pb", "manifest_from_pb", "manifest_to_pb"]


def info_to_pb(info: ObjectInfo) -> data_pb2.ObjectInfo:
    """An ``ObjectInfo`` message for a library :class:`ObjectInfo`."""
    return data_pb2.ObjectInfo(
        path=info.path,
        size=info.size,
        mtime_ns=info.mtime_ns,
        sha256=info.sha256,
        is_dir=info.is_dir,
    )


def info_from_pb(msg: data_pb2.ObjectInfo) -> ObjectInfo:
    """A library :class:`ObjectInfo` for an ``ObjectInfo`` message."""
    return ObjectInfo(msg.path, msg.size, msg.mtime_ns, msg.sha256, is_dir=msg.is_dir)


def manifest_to_pb(entries: Iterable[ManifestEntry]) -> list[data_pb2.ManifestEntry]:
    """``ManifestEntry`` messages for manifest entries."""
    return [
        data_pb2.ManifestEntry(relpath=e.relpath, size=e.size, sha256=e.sha256) for e in entries
    ]


def manifest_from_pb(msgs: Iterable[data_pb2.ManifestEntry]) -> list[ManifestEntry]:
    """Manifest entries for ``ManifestEntry`` messages."""
    return [ManifestEntry(m.relpath, m.size, m.sha256) for m in msgs]
