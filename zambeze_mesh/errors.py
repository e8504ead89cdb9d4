"""One error hierarchy for the whole project.

Library code raises these; :mod:`zambeze_mesh.grpc_status` maps them to gRPC status
codes and back, and the CLI maps them to one-line messages and exit codes. This module
imports nothing, so the pure state machines can raise them without loading gRPC.
"""

from __future__ import annotations


class ZmeshError(Exception):
    """Base of every error zambeze-mesh raises on purpose."""

    #: The gRPC status code name it travels as (see :mod:`zambeze_mesh.grpc_status`).
    code_name: str = "INTERNAL"
    exit_code: int = 1


class InvalidInput(ZmeshError):
    """The request or argument is malformed or out of bounds."""

    code_name = "INVALID_ARGUMENT"
    exit_code = 2


class NotPermitted(ZmeshError):
    """The caller is authenticated but not allowed to do this."""

    code_name = "PERMISSION_DENIED"
    exit_code = 3


class Unauthenticated(ZmeshError):
    """The caller could not be authenticated (bad token, bad proof, no certificate)."""

    code_name = "UNAUTHENTICATED"
    exit_code = 3


class NotFound(ZmeshError):
    """The named object does not exist."""

    code_name = "NOT_FOUND"
    exit_code = 4


class AlreadyExists(ZmeshError):
    """The object already exists (a name taken, a home already initialised)."""

    code_name = "ALREADY_EXISTS"
    exit_code = 5


class FailedPrecondition(ZmeshError):
    """The system is not in a state where this can be done."""

    code_name = "FAILED_PRECONDITION"
    exit_code = 6


class ResourceExhausted(ZmeshError):
    """A size or count limit was exceeded, or no slots are left."""

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

    code_name = "UNAVAILABLE"
    exit_code = 8


class Unimplemented(ZmeshError):
    """The operation exists in the contract but is not built (yet)."""

    code_name = "UNIMPLEMENTED"
    exit_code = 9


class DataIntegrityError(ZmeshError):
    """Received bytes do not match the announced digest."""

    code_name = "DATA_LOSS"
    exit_code = 10
