"""Digests of an attempt's inputs and outputs, reported in its events for provenance.

The contractor already knows every input it staged (the fetch verified its sha256)
and the catalog caches the digest of every file it hashed, so the final event of an
attempt can carry what it read and what it produced without another pass over the
data by anyone else. Detail keys (JSON strings, see ``common.proto`` ``Event``):

* ``inputs``: ``[{"uri", "path", "size", "sha256", "role"}]`` for each input and
  script of the attempt (``role`` is ``input``, ``script`` or ``source``).
* ``outputs``: ``[[relpath, size, sha256], ...]`` for the files of the output
  (relative to ``outputs_dir``; at most :data:`MAX_LISTED`: ``outputs_files`` and
  ``outputs_bytes`` count them all, ``outputs_sha256`` digests the whole manifest).
* ``result_sha256``: the sha256 of a function's cloudpickled return value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from zambeze_mesh.data.catalog import Catalog, ManifestEntry, ObjectInfo, digest_of_manifest
from zambeze_mesh.errors import ResourceExhausted, ZmeshError

log = logging.getLogger(__name__)

MAX_LISTED = 1000
"""Most output files listed one by one in an event (the rest are only counted)."""


def input_record(uri: str, path: Path, info: ObjectInfo | None, role: str) -> dict[str, str]:
    """One entry of the ``inputs`` detail (``sha256`` empty when it is not known)."""
    rec = {"uri": uri, "path": str(path), "role": role}
    if info is not None:
        rec["size"] = str(info.size)
        rec["sha256"] = info.sha256
        if info.is_dir:
            rec["dir"] = "1"
    return rec


def local_info(catalog: Catalog, path: Path) -> ObjectInfo | None:
    """Size and sha256 of a local input (a directory: its manifest digest), or None.

    Blocks (may hash); digests come from the catalog's cache when the file did not
    change since it was last hashed.
    """
    try:
        real = Path(os.path.realpath(path))
        if not real.is_dir():
            return catalog.info(real)
        entries = _manifest(catalog, real)
        if entries is None:
            return None
        size = sum(e.size for e in entries)
        return ObjectInfo(str(path), size, 0, digest_of_manifest(entries), is_dir=True)
    except (OSError, ZmeshError) as exc:
        log.debug("no digest for input %s: %s", path, exc)
        return None


def _manifest(catalog: Catalog, real: Path) -> list[ManifestEntry] | None:
    """The manifest of ``real``, or None over the catalog's bound on files."""
    try:
        return catalog.manifest_of(real)
    except ResourceExhausted:
        return None


def output_detail(catalog: Catalog, path: Path) -> dict[str, str]:
    """The ``outputs*`` detail keys for the output file or directory ``path``.

    Blocks (hashes new files). An output that cannot be listed (too many files,
    outside the sandbox, gone) gives ``outputs_error`` instead.
    """
    try:
        real = Path(os.path.realpath(path))
        if not real.exists():
            return {"outputs_error": f"{path} does not exist"}
        entries = _manifest(catalog, real)
    except (OSError, ZmeshError) as exc:
        return {"outputs_error": str(exc)}
    if entries is None:
        return {"outputs_error": f"more than {catalog.max_entries} files"}
    listed = [[e.relpath, e.size, e.sha256] for e in entries[:MAX_LISTED]]
    return {
        "outputs_dir": str(path if real.is_dir() else path.parent),
        "outputs": json.dumps(listed, separators=(",", ":")),
        "outputs_files": str(len(entries)),
        "outputs_bytes": str(sum(e.size for e in entries)),
        "outputs_sha256": digest_of_manifest(entries),
    }


def result_sha256(result: bytes) -> str:
    """Hex sha256 of a function's cloudpickled return value."""
    return hashlib.sha256(result).hexdigest()
