"""Data fabric: URIs, sandbox, catalog, grants, method negotiation and streaming transfers.

The library layer behind the ``Data`` gRPC service; the servicer translates protobuf
messages to and from these objects.

Names are imported lazily so that importing a pure module (URI parsing, methods)
does not load gRPC (the stream and the client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zambeze_mesh.lazy import lazy_exports

if TYPE_CHECKING:
    from zambeze_mesh.data.catalog import (
        Catalog,
        DigestKey,
        DigestStore,
        ManifestEntry,
        MemoryDigestStore,
        ObjectInfo,
        digest_of_manifest,
        sha256_file,
    )
    from zambeze_mesh.data.grants import (
        GrantIssuer,
    )
    from zambeze_mesh.data.methods import (
        DEFAULT_METHODS,
        GRPC_STREAM,
        KNOWN_METHODS,
        RSYNC,
        TLS_STREAM,
        choose_method,
        normalize_methods,
    )
    from zambeze_mesh.data.receive import (
        ChunkCorrupt,
        FileReceiver,
        already_present,
        chunk_digest,
        manifest_dest,
        verify_chunk_digest,
    )
    from zambeze_mesh.data.sandbox import (
        Sandbox,
        check_path_text,
        open_regular,
    )
    from zambeze_mesh.data.stream import (
        DEFAULT_CHUNK,
        MAX_CHUNK,
        FetchStats,
        Piece,
        chunk_messages,
        fetch_file,
        is_retryable,
        pieces_from_messages,
        read_chunks,
    )
    from zambeze_mesh.data.uris import (
        AGENTDIR,
        OUTPUTDIR,
        WORKINGDIR,
        DataUri,
        expand_escapes,
        parse_uri,
    )

_WHERE = {
    "Catalog": "catalog",
    "DigestKey": "catalog",
    "DigestStore": "catalog",
    "ManifestEntry": "catalog",
    "MemoryDigestStore": "catalog",
    "ObjectInfo": "catalog",
    "digest_of_manifest": "catalog",
    "sha256_file": "catalog",
    "GrantIssuer": "grants",
    "DEFAULT_METHODS": "methods",
    "GRPC_STREAM": "methods",
    "KNOWN_METHODS": "methods",
    "RSYNC": "methods",
    "TLS_STREAM": "methods",
    "choose_method": "methods",
    "normalize_methods": "methods",
    "ChunkCorrupt": "receive",
    "FileReceiver": "receive",
    "already_present": "receive",
    "chunk_digest": "receive",
    "manifest_dest": "receive",
    "verify_chunk_digest": "receive",
    "Sandbox": "sandbox",
    "check_path_text": "sandbox",
    "open_regular": "sandbox",
    "DEFAULT_CHUNK": "stream",
    "MAX_CHUNK": "stream",
    "FetchStats": "stream",
    "Piece": "stream",
    "chunk_messages": "stream",
    "fetch_file": "stream",
    "is_retryable": "stream",
    "pieces_from_messages": "stream",
    "read_chunks": "stream",
    "AGENTDIR": "uris",
    "OUTPUTDIR": "uris",
    "WORKINGDIR": "uris",
    "DataUri": "uris",
    "expand_escapes": "uris",
    "parse_uri": "uris",
}
_SUBMODULES: frozenset[str] = frozenset()

__all__ = [
    "AGENTDIR",
    "DEFAULT_CHUNK",
    "DEFAULT_METHODS",
    "GRPC_STREAM",
    "KNOWN_METHODS",
    "MAX_CHUNK",
    "OUTPUTDIR",
    "RSYNC",
    "TLS_STREAM",
    "WORKINGDIR",
    "Catalog",
    "ChunkCorrupt",
    "DataUri",
    "DigestKey",
    "DigestStore",
    "FetchStats",
    "FileReceiver",
    "GrantIssuer",
    "ManifestEntry",
    "MemoryDigestStore",
    "ObjectInfo",
    "Piece",
    "Sandbox",
    "already_present",
    "check_path_text",
    "choose_method",
    "chunk_digest",
    "chunk_messages",
    "digest_of_manifest",
    "expand_escapes",
    "fetch_file",
    "is_retryable",
    "manifest_dest",
    "normalize_methods",
    "open_regular",
    "parse_uri",
    "pieces_from_messages",
    "read_chunks",
    "sha256_file",
    "verify_chunk_digest",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals(), _SUBMODULES)
