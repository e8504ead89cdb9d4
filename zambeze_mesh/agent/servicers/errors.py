"""One error map: library exceptions become gRPC statuses with clear messages."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import grpc
from grpc._cython import cygrpc

from zambeze_mesh.errors import RETRY_AFTER_KEY, Overloaded, ZmeshError
from zambeze_mesh.grpc_status import grpc_code

log = logging.getLogger("zambeze_mesh.rpc")

F = TypeVar("F", bound=Callable[..., Any])

#: What gRPC raises from ``context.write``/``read`` when the call already ended under
#: the handler (most often: the peer cancelled it or went away). Re-raised untouched:
#: gRPC ends such a call quietly when its client closed it, and logs it otherwise.
CALL_ENDED: tuple[type[BaseException], ...] = (cygrpc.ExecuteBatchError,)


def rpc_errors(func: F) -> F:
    """Decorate a servicer method: ZmeshError → its status; anything else → INTERNAL, logged."""
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def stream(
            self: Any, request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            try:
                async for item in func(self, request, context):
                    yield item
            except ZmeshError as exc:
                await context.abort(grpc_code(exc), str(exc))
            except (grpc.aio.AbortError, GeneratorExit, *CALL_ENDED):
                raise
            except Exception as exc:
                log.exception("rpc.internal_error", extra={"fields": {"method": func.__name__}})
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")

        return cast(F, stream)

    @functools.wraps(func)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await func(self, request, context)
        except ZmeshError as exc:
            if isinstance(exc, Overloaded):
                ms = str(int(exc.retry_after_s * 1000))
                await context.abort(grpc_code(exc), str(exc), ((RETRY_AFTER_KEY, ms),))
            await context.abort(grpc_code(exc), str(exc))
        except (grpc.aio.AbortError, *CALL_ENDED):
            raise
        except Exception as exc:
            log.exception("rpc.internal_error", extra={"fields": {"method": func.__name__}})
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")

    return cast(F, unary)
