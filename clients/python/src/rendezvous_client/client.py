"""``Client``: the unary calls of ``WaitService`` and ``CallbackService`` with plain Python
arguments, retries of the idempotent ones, and errors mapped to ``RendezvousError``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

from ._gen import rendezvous_pb2 as v1
from ._gen import rendezvous_pb2_grpc as v1_grpc
from ._transport import auth_metadata, backoff_delay, open_channel
from .errors import error_from_rpc

_Response = TypeVar("_Response")

#: Codes after which an idempotent call is made again.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls (RegisterWait, the deliveries, GetWait, ListWaits) are retried on
    UNAVAILABLE and ABORTED: at most ``attempts`` calls in all, pausing
    ``initial_backoff * multiplier**(n-1)`` seconds (capped at ``max_backoff``, then a random
    point in its upper half) after the n-th failure. ``attempts=1`` disables retries. A retry
    of a call whose answer was lost answers like any repeat: ``created = False`` for
    RegisterWait, ``DELIVERY_RESULT_DUPLICATE`` for a delivery."""

    attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("RetryPolicy needs 0 < initial_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ValueError("RetryPolicy.multiplier must be at least 1")

    def backoff(self, failures: int) -> float:
        """The pause in seconds after ``failures`` failed attempts (``failures >= 1``)."""
        return backoff_delay(self.initial_backoff, self.max_backoff, failures, self.multiplier)


def _json_text(value: str | Mapping[str, Any] | list[Any]) -> str:
    """JSON text as given, or ``value`` serialized."""
    return value if isinstance(value, str) else json.dumps(value)


def _body_bytes(body: bytes | str | Mapping[str, Any] | list[Any]) -> bytes:
    """An HTTP body as bytes: as given, UTF-8 encoded, or serialized as JSON."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _one_key(wait_id: str | None, correlation_id: str | None) -> dict[str, str]:
    """The ``key`` oneof of GetWait / CancelWait: exactly one of the two."""
    if wait_id is not None and correlation_id is None:
        return {"wait_id": wait_id}
    if correlation_id is not None and wait_id is None:
        return {"correlation_id": correlation_id}
    raise ValueError("give exactly one of wait_id and correlation_id")


class Client:
    """A client of one Rendezvous endpoint (an instance, or a load balancer in front of several).

    Use it as an async context manager (or call ``close()``), inside a running event loop::

        async with Client("127.0.0.1:50151") as client:
            wait = await client.register_wait(
                execution_id="exec-1", node_id="wait-1", node_config=config
            )

    ``token`` is sent as ``authorization: Bearer <token>``; ``root_certificates`` (PEM) makes
    the channel TLS. Every method takes keyword arguments and returns the RPC's response
    message; failures raise a ``RendezvousError`` subclass. ``timeout`` is each attempt's
    deadline in seconds (``None``: none).
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float | None = 30.0,
    ) -> None:
        self._retry = retry
        self._timeout = timeout
        self._metadata = auth_metadata(token)
        # grpc's own reconnect backoff follows the policy, so a retry after a restart finds
        # the channel trying again rather than still waiting out grpc's default of 1 s and more.
        self._channel = open_channel(
            target,
            root_certificates,
            options=(
                ("grpc.initial_reconnect_backoff_ms", max(1, int(retry.initial_backoff * 1000))),
                ("grpc.max_reconnect_backoff_ms", max(1, int(retry.max_backoff * 1000))),
            ),
        )
        self._waits = v1_grpc.WaitServiceStub(self._channel)
        self._callbacks = v1_grpc.CallbackServiceStub(self._channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        await self._channel.close()

    async def _call(
        self,
        method: Callable[..., Awaitable[_Response]],
        request: object,
        *,
        idempotent: bool,
    ) -> _Response:
        """Makes one call, retrying it per the policy when ``idempotent``."""
        failures = 0
        while True:
            try:
                return await method(request, metadata=self._metadata, timeout=self._timeout)
            except grpc.aio.AioRpcError as error:
                failures += 1
                if (
                    not idempotent
                    or error.code() not in RETRYABLE_CODES
                    or failures >= self._retry.attempts
                ):
                    raise error_from_rpc(error) from error
            await asyncio.sleep(self._retry.backoff(failures))

    async def register_wait(
        self,
        *,
        execution_id: str,
        node_id: str,
        node_config: str | Mapping[str, Any],
        input_variables: Mapping[str, str] | None = None,
        idempotency_key: str = "",
        tenant_id: str = "",
        workflow_id: str = "",
        correlation_id: str = "",
    ) -> v1.RegisterWaitResponse:
        """Registers a wait for a ``wait_events`` node (``node_config``: its JSON text or the
        parsed object). Idempotent per (tenant, execution_id, node_id, idempotency_key): a
        repeat returns the same wait with ``created = False``; retried."""
        request = v1.RegisterWaitRequest(
            execution_id=execution_id,
            node_id=node_id,
            node_config_json=_json_text(node_config),
            input_variables=dict(input_variables or {}),
            idempotency_key=idempotency_key,
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            correlation_id=correlation_id,
        )
        return await self._call(self._waits.RegisterWait, request, idempotent=True)

    async def deliver_api_response(
        self,
        *,
        correlation_id: str,
        execution_id: str,
        http_status: int,
        body: bytes | str | Mapping[str, Any] | list[Any],
        idempotency_key: str,
        headers: Mapping[str, str] | None = None,
        tenant_id: str = "",
    ) -> v1.DeliverApiResponseResponse:
        """Delivers the external API's response for a wait's ``api`` source (``body``: bytes,
        text, or a JSON value to serialize). A repeat with the same ``idempotency_key`` is
        reported ``DELIVERY_RESULT_DUPLICATE``; retried."""
        request = v1.DeliverApiResponseRequest(
            correlation_id=correlation_id,
            execution_id=execution_id,
            http_status=http_status,
            headers=dict(headers or {}),
            body=_body_bytes(body),
            idempotency_key=idempotency_key,
            tenant_id=tenant_id,
        )
        return await self._call(self._callbacks.DeliverApiResponse, request, idempotent=True)

    async def deliver_event(
        self,
        *,
        correlation_id: str,
        execution_id: str,
        source: str,
        payload: str | Mapping[str, Any],
        event_key: str,
        tenant_id: str = "",
    ) -> v1.DeliverEventResponse:
        """Delivers an event for a named source of a wait (``api``, ``kafka`` or a
        ``data.sources`` name; ``payload``: JSON text or an object to serialize). A repeat with
        the same ``event_key`` is reported ``DELIVERY_RESULT_DUPLICATE``; retried."""
        request = v1.DeliverEventRequest(
            correlation_id=correlation_id,
            execution_id=execution_id,
            source=source,
            payload_json=_json_text(payload),
            event_key=event_key,
            tenant_id=tenant_id,
        )
        return await self._call(self._callbacks.DeliverEvent, request, idempotent=True)

    async def get_wait(
        self,
        *,
        wait_id: str | None = None,
        correlation_id: str | None = None,
        tenant_id: str = "",
    ) -> v1.GetWaitResponse:
        """One wait by ``wait_id`` or by ``correlation_id`` (exactly one), with what it has
        received, still waits for, and ignored. Retried."""
        request = v1.GetWaitRequest(tenant_id=tenant_id, **_one_key(wait_id, correlation_id))
        return await self._call(self._waits.GetWait, request, idempotent=True)

    async def list_waits(
        self,
        *,
        tenant_id: str = "",
        statuses: Iterable[v1.WaitStatus | str] = (),
        execution_id: str = "",
        created_before: datetime | None = None,
        page_size: int = 0,
    ) -> AsyncIterator[v1.Wait]:
        """Every wait matching the filters, newest first, fetching page after page
        (``page_size`` waits per call; 0: the server's default). ``statuses`` are
        ``WaitStatus`` values (``v1.WAIT_STATUS_COMPLETED``) or names; empty: every status.
        Each page's call is retried."""
        request = v1.ListWaitsRequest(
            tenant_id=tenant_id,
            statuses=list(statuses),
            execution_id=execution_id,
            page_size=page_size,
        )
        if created_before is not None:
            request.created_before.FromDatetime(created_before)
        while True:
            page: v1.ListWaitsResponse = await self._call(
                self._waits.ListWaits, request, idempotent=True
            )
            for wait in page.waits:
                yield wait
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def cancel_wait(
        self,
        *,
        wait_id: str | None = None,
        correlation_id: str | None = None,
        reason: str = "",
        tenant_id: str = "",
    ) -> v1.CancelWaitResponse:
        """Cancels an open wait by ``wait_id`` or ``correlation_id`` (exactly one); the engine
        gets a resume with outcome CANCELLED. A decided wait is returned unchanged with
        ``already_decided = True``. Not retried: a retry of a cancel whose answer was lost
        would report ``already_decided``."""
        request = v1.CancelWaitRequest(
            tenant_id=tenant_id, reason=reason, **_one_key(wait_id, correlation_id)
        )
        return await self._call(self._waits.CancelWait, request, idempotent=False)
