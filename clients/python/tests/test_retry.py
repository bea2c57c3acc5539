"""Which calls ``Client`` retries, and how often: against an in-process gRPC server that fails
on purpose (the real service cannot be made to answer UNAVAILABLE or ABORTED on demand)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from rendezvous_client import (
    AbortedError,
    Client,
    InvalidArgumentError,
    ResourceExhaustedError,
    RetryPolicy,
    UnavailableError,
    v1,
)
from rendezvous_client._gen import rendezvous_pb2_grpc as v1_grpc

FAST = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.02)


@dataclass
class Script:
    """The codes the fake answers with, one per call, then OK; and the calls it got."""

    failures: list[grpc.StatusCode] = field(default_factory=list)
    calls: int = 0
    metadata: list[tuple[str, str]] = field(default_factory=list)

    async def answer(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Counts the call and aborts it with the next scripted code, if any."""
        self.calls += 1
        self.metadata = [
            (k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)
        ]
        if self.failures:
            await context.abort(self.failures.pop(0), "scripted failure")


class FakeCallbacks(v1_grpc.CallbackServiceServicer):
    """DeliverEvent as scripted."""

    def __init__(self, script: Script) -> None:
        self.script = script

    async def DeliverEvent(
        self, request: v1.DeliverEventRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> v1.DeliverEventResponse:
        await self.script.answer(context)
        return v1.DeliverEventResponse(result=v1.DELIVERY_RESULT_ACCEPTED, wait_id="w-1")


class FakeWaits(v1_grpc.WaitServiceServicer):
    """CancelWait as scripted."""

    def __init__(self, script: Script) -> None:
        self.script = script

    async def CancelWait(
        self, request: v1.CancelWaitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> v1.CancelWaitResponse:
        await self.script.answer(context)
        return v1.CancelWaitResponse(wait=v1.Wait(wait_id=request.wait_id))


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Script, str]]:
    """The scripted server and its target."""
    script = Script()
    server = grpc.aio.server()
    v1_grpc.add_CallbackServiceServicer_to_server(FakeCallbacks(script), server)
    v1_grpc.add_WaitServiceServicer_to_server(FakeWaits(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield script, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def deliver(client: Client) -> v1.DeliverEventResponse:
    return await client.deliver_event(
        correlation_id="c-1", execution_id="e-1", source="kafka", payload="{}", event_key="k-1"
    )


async def test_unavailable_and_aborted_are_retried_until_success(
    fake: tuple[Script, str],
) -> None:
    script, target = fake
    script.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED]
    async with Client(target, retry=FAST, token="secret-key") as client:
        response = await deliver(client)
    assert response.result == v1.DELIVERY_RESULT_ACCEPTED
    assert script.calls == 3
    assert ("authorization", "Bearer secret-key") in script.metadata


async def test_retries_stop_after_the_policys_attempts(fake: tuple[Script, str]) -> None:
    script, target = fake
    script.failures = [grpc.StatusCode.UNAVAILABLE] * 10
    async with Client(target, retry=FAST) as client:
        with pytest.raises(UnavailableError) as raised:
            await deliver(client)
    assert script.calls == FAST.attempts
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.message == "scripted failure"


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
    ],
)
async def test_other_codes_are_not_retried(
    fake: tuple[Script, str], code: grpc.StatusCode, error: type[Exception]
) -> None:
    script, target = fake
    script.failures = [code]
    async with Client(target, retry=FAST) as client:
        with pytest.raises(error):
            await deliver(client)
    assert script.calls == 1


async def test_cancel_wait_is_not_retried(fake: tuple[Script, str]) -> None:
    script, target = fake
    script.failures = [grpc.StatusCode.ABORTED]
    async with Client(target, retry=FAST) as client:
        with pytest.raises(AbortedError):
            await client.cancel_wait(wait_id="w-1")
    assert script.calls == 1
