"""Errors raised by the client: one ``RendezvousError`` subclass per gRPC status code of the
service's error model (proto/rendezvous/v1/rendezvous.proto), carrying the code and the
server's message (which names what was wrong, e.g. ``node_config.data.kafkaEvent.topic:
required when enabled``)."""

from __future__ import annotations

import grpc


class RendezvousError(Exception):
    """A call the service refused or that could not be made; see ``code`` and ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        """The gRPC status code."""
        self.message = message
        """The server's message (gRPC status details)."""


class InvalidArgumentError(RendezvousError):
    """A field is missing or malformed, or the node config is invalid (``path: reason`` list)."""


class UnauthenticatedError(RendezvousError):
    """No credential, or one that is not valid."""


class PermissionDeniedError(RendezvousError):
    """The credential lacks the RPC's role, or the request names a tenant not its own."""


class NotFoundError(RendezvousError):
    """No such wait among the caller's tenants."""


class AlreadyExistsError(RendezvousError):
    """An idempotency key (or correlation id) was reused with a different request."""


class FailedPreconditionError(RendezvousError):
    """The request does not fit the wait's state, e.g. an execution id mismatch."""


class ResourceExhaustedError(RendezvousError):
    """A message, payload, node config or page size is over its limit. Not retryable."""


class AbortedError(RendezvousError):
    """Too many concurrent writers on one wait; safe to retry (the client already did)."""


class UnavailableError(RendezvousError):
    """The service or its database is unreachable; safe to retry (the client already did)."""


class DeadlineExceededError(RendezvousError):
    """The call did not finish within its deadline."""


class InternalError(RendezvousError):
    """A bug in the service; nothing half-done was committed."""


_BY_CODE: dict[grpc.StatusCode, type[RendezvousError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def error_from_rpc(error: grpc.aio.AioRpcError) -> RendezvousError:
    """The ``RendezvousError`` subclass for a failed call's status."""
    code = error.code()
    return _BY_CODE.get(code, RendezvousError)(code, error.details() or "")
