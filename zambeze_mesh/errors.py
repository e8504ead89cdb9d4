"""One error hierarchy for the whole project.

Library code raises these; the gRPC layer maps them to status codes (see
:func:`grpc_code`) and the CLI maps them to one-line messages and exit codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


class _StatusCode:
    """A class attribute holding a gRPC status code, looked up on first read so that
    importing this module (as every pure module does) does not load grpc."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type) -> grpc.StatusCode:
        import grpc

        return grpc.StatusCode[self.name]


class ZmeshError(Exception):
    """Base of every error zambeze-mesh raises on purpose."""

    code = _StatusCode("INTERNAL")
    code_name: str = "INTERNAL"
    exit_code: int = 1


class InvalidInput(ZmeshError):
    """The request or argument is malformed or out of bounds."""

    code = _StatusCode("INVALID_ARGUMENT")
    code_name = "INVALID_ARGUMENT"
    exit_code = 2


class NotPermitted(ZmeshError):
    """The caller is authenticated but not allowed to do this."""

    code = _StatusCode("PERMISSION_DENIED")
    code_name = "PERMISSION_DENIED"
    exit_code = 3


class Unauthenticated(ZmeshError):
    """The caller could not be authenticated (bad token, bad proof, no certificate)."""

    code = _StatusCode("UNAUTHENTICATED")
    code_name = "UNAUTHENTICATED"
    exit_code = 3


class NotFound(ZmeshError):
    """The named object does not exist."""

    code = _StatusCode("NOT_FOUND")
    code_name = "NOT_FOUND"
    exit_code = 4


class AlreadyExists(ZmeshError):
    """The object already exists (a name taken, a home already initialised)."""

    code = _StatusCode("ALREADY_EXISTS")
    code_name = "ALREADY_EXISTS"
    exit_code = 5


class FailedPrecondition(ZmeshError):
    """The system is not in a state where this can be done."""

    code = _StatusCode("FAILED_PRECONDITION")
    code_name = "FAILED_PRECONDITION"
    exit_code = 6


class ResourceExhausted(ZmeshError):
    """A size or count limit was exceeded, or no slots are left."""

    code = _StatusCode("RESOURCE_EXHAUSTED")
    code_name = "RESOURCE_EXHAUSTED"
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

    code = _StatusCode("UNAVAILABLE")
    code_name = "UNAVAILABLE"
    exit_code = 8


class Unimplemented(ZmeshError):
    """The operation exists in the contract but is not built (yet)."""

    code = _StatusCode("UNIMPLEMENTED")
    code_name = "UNIMPLEMENTED"
    exit_code = 9


class DataIntegrityError(ZmeshError):
    """Received bytes do not match the announced digest."""

    code = _StatusCode("DATA_LOSS")
    code_name = "DATA_LOSS"
    exit_code = 10


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
    import grpc

    if isinstance(exc, ZmeshError):
        return exc.code
    return grpc.StatusCode.INTERNAL


def from_rpc_error(exc: grpc.RpcError) -> ZmeshError:
    """Turn a failed call's status back into the matching ZmeshError."""
    import grpc

    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED,):
        return Unavailable(details or "deadline exceeded")
    cls = _BY_CODE.get(code.name, ZmeshError)
    err = cls(details or code.name)
    return err
