"""Data fabric: URIs, sandbox, catalog, grants, method negotiation and streaming transfers.

The library layer behind the ``Data`` gRPC service; the servicer translates protobuf
messages to and from these objects.
"""

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
from zambeze_mesh.data.grants import GrantIssuer
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
from zambeze_mesh.data.sandbox import Sandbox, check_path_text, open_regular
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
