"""The Python client of Rendezvous (asyncio, on grpcio).

- ``Client``: RegisterWait, the deliveries, GetWait, ListWaits and CancelWait with plain Python
  arguments; idempotent calls are retried on UNAVAILABLE and ABORTED (``RetryPolicy``).
- ``ResumeFeed``: owns the resume stream: reconnects across instances, runs the handler with
  bounded concurrency, acks after the handler returned, and deduplicates redeliveries.
- ``v1``: the generated ``rendezvous.v1`` messages and enums (``v1.Resume``,
  ``v1.OUTCOME_COMPLETED``, ...).
- ``RendezvousError`` and its subclasses, one per status code of the service's error model.
"""

from ._gen import rendezvous_pb2 as v1
from .client import Client, RetryPolicy
from .errors import (
    AbortedError,
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RendezvousError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from .feed import FeedStats, ResumeFeed

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "Client",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FeedStats",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "RendezvousError",
    "ResourceExhaustedError",
    "ResumeFeed",
    "RetryPolicy",
    "UnauthenticatedError",
    "UnavailableError",
    "v1",
]
