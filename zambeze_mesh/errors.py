"""One error hierarchy for the whole project.

Library code raises these; the gRPC layer maps them to status codes (see
:func:`grpc_code`) and the CLI maps them to one-line messages and exit codes.
"""

from __future__ import annotations

import grpc


class ZmeshError(Exception):
    """Base of every error zambeze-mesh raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    exit_code: int = 1


class InvalidInput(ZmeshError):
    """The request or argument is malformed or out of bounds."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    exit_code = 2


class NotPermitted(ZmeshError):
    """The caller is authenticated but not allowed to do this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    exit_code = 3


class Unauthenticated(ZmeshError):
    """The caller could not be authenticated (bad token, bad proof, no certificate)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    exit_code = 3


class NotFound(ZmeshError):
    """The named object does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    exit_code = 4


class AlreadyExists(ZmeshError):
    """The object already exists (a name taken, a home already initialised)."""

    code = grpc.StatusCode.ALREADY_EXISTS
    exit_code = 5


class FailedPrecondition(ZmeshError):
    """The system is not in a state where this can be done."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    exit_code = 6


class ResourceExhausted(ZmeshError):
    """A size or count limit was exceeded, or no slots are left."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    exit_code = 7


class Overloaded(ResourceExhausted):
    """Too much is already being admitted for this caller: retry after ``retry_after_s``.

    On the wire: RESOURCE_EXHAUSTED with the trailing metadata
    ``retry-after-ms`` (:data:`RETRY_AFTER_KEY`)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


#: Trailing metadata key of a retry hint, in milliseconds.
RETRY_AFTER_KEY = "retry-after-ms"


class Unavailable(ZmeshError):
    """A peer or the local agent cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE
    exit_code = 8


class Unimplemented(ZmeshError):
    """The operation exists in the contract but is not built (yet)."""

    code = grpc.StatusCode.UNIMPLEMENTED
    exit_code = 9


class DataIntegrityError(ZmeshError):
    """Received bytes do not match the announced digest."""

    code = grpc.StatusCode.DATA_LOSS
    exit_code = 10


_BY_CODE: dict[grpc.StatusCode, type[ZmeshError]] = {
    cls.code: cls
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
        return exc.code
    return grpc.StatusCode.INTERNAL


def from_rpc_error(exc: grpc.RpcError) -> ZmeshError:
    """Turn a failed call's status back into the matching ZmeshError."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED,):
        return Unavailable(details or "deadline exceeded")
    cls = _BY_CODE.get(code, ZmeshError)
    err = cls(details or code.name)
    return err
