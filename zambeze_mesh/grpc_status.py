"""The gRPC side of :mod:`zambeze_mesh.errors`: the status code a
:class:`~zambeze_mesh.errors.ZmeshError` travels as, and the error a failed call's
status stands for."""

from __future__ import annotations

import grpc

from zambeze_mesh.errors import (
    AlreadyExists,
    DataIntegrityError,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    NotPermitted,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    ZmeshError,
)

__all__ = ["from_rpc_error", "grpc_code"]

_BY_CODE: dict[str, type[ZmeshError]] = {
    cls.code_name: cls
    for cls in (
        InvalidInput,
        NotPermitted,
        Unauthenticated,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        Unimplemented,
        DataIntegrityError,
    )
}


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception (INTERNAL for unexpected ones)."""
    if isinstance(exc, ZmeshError):
        return grpc.StatusCode[exc.code_name]
    return grpc.StatusCode.INTERNAL


def from_rpc_error(exc: grpc.RpcError) -> ZmeshError:
    """Turn a failed call's status back into the matching ZmeshError."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED,):
        return Unavailable(details or "deadline exceeded")
    cls = _BY_CODE.get(code.name, ZmeshError)
    err = cls(details or code.name)
    return err
