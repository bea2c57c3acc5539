"""``Client`` against the real service: registering, delivering, reading, cancelling, and the
errors of the service's error model."""

from __future__ import annotations

import json

import grpc
import pytest
from support import (
    RendezvousServer,
    deliver_api,
    deliver_kafka,
    eventually,
    register,
    seed_config,
    unacked_resumes,
)

from rendezvous_client import (
    AlreadyExistsError,
    Client,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResumeFeed,
    v1,
)


async def test_both_deliveries_complete_the_wait_and_resume_it_once(
    server: RendezvousServer, client: Client
) -> None:
    resumes: list[v1.Resume] = []

    async def handler(resume: v1.Resume) -> None:
        resumes.append(resume)

    async with ResumeFeed([server.target], handler) as feed:
        wait = await register(client, "exec-both")
        assert wait.created
        assert wait.status == v1.WAIT_STATUS_WAITING_FOR_EVENTS

        api = await deliver_api(client, wait, "exec-both")
        assert api.result == v1.DELIVERY_RESULT_ACCEPTED
        assert api.status == v1.WAIT_STATUS_WAITING_FOR_KAFKA
        assert resumes == []

        kafka = await deliver_kafka(client, wait, "exec-both")
        assert kafka.result == v1.DELIVERY_RESULT_COMPLETED
        assert kafka.status == v1.WAIT_STATUS_COMPLETED

        await eventually(lambda: len(resumes) == 1, 10, "the resume")
    assert len(resumes) == 1
    assert await unacked_resumes(server.target) == []
    resume = resumes[0]
    assert resume.wait_id == wait.wait_id
    assert resume.correlation_id == wait.correlation_id
    assert resume.execution_id == "exec-both"
    assert resume.outcome == v1.OUTCOME_COMPLETED
    assert resume.delivery_attempt == 1
    assert [event.source for event in resume.events] == ["api", "kafka"]
    api_event = json.loads(resume.events[0].payload_json)
    assert api_event["status"] == 200
    assert api_event["body"] == {"accepted": True}
    assert feed.stats.handled == 1
    assert feed.stats.duplicates_skipped == 0


async def test_repeated_calls_with_the_same_keys_are_duplicates(client: Client) -> None:
    first = await register(client, "exec-dup", idempotency_key="loop-1")
    again = await register(client, "exec-dup", idempotency_key="loop-1")
    assert first.created and not again.created
    assert (again.wait_id, again.correlation_id) == (first.wait_id, first.correlation_id)

    assert (await deliver_api(client, first, "exec-dup")).result == v1.DELIVERY_RESULT_ACCEPTED
    assert (await deliver_api(client, first, "exec-dup")).result == v1.DELIVERY_RESULT_DUPLICATE
    assert (await deliver_kafka(client, first, "exec-dup")).result == v1.DELIVERY_RESULT_COMPLETED
    repeat = await deliver_kafka(client, first, "exec-dup")
    assert repeat.result == v1.DELIVERY_RESULT_DUPLICATE
    assert repeat.status == v1.WAIT_STATUS_COMPLETED


async def test_errors_carry_the_code_and_the_servers_message(client: Client) -> None:
    config = {
        "type": "wait_events",
        "data": {"kafkaEvent": {"enabled": True}, "aggregationStrategy": "all"},
    }
    with pytest.raises(InvalidArgumentError) as invalid:
        await client.register_wait(execution_id="exec-err", node_id="n", node_config=config)
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "data.kafkaEvent.topic: required when enabled" in invalid.value.message
    assert "INVALID_ARGUMENT" in str(invalid.value)

    with pytest.raises(InvalidArgumentError):
        await client.register_wait(execution_id="exec-err", node_id="n", node_config="{not json")

    wait = await register(client, "exec-err", node_id="n", idempotency_key="k")
    with pytest.raises(AlreadyExistsError):
        await client.register_wait(
            execution_id="exec-err",
            node_id="n",
            node_config=seed_config("02-wait-for-any.json"),
            idempotency_key="k",
        )

    with pytest.raises(FailedPreconditionError):
        await client.deliver_event(
            correlation_id=wait.correlation_id,
            execution_id="another-execution",
            source="kafka",
            payload={"event_type": "action.completed"},
            event_key="mismatch-1",
        )

    with pytest.raises(NotFoundError) as missing:
        await client.get_wait(correlation_id="no-such-correlation-id")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND

    with pytest.raises(ValueError):
        await client.get_wait(wait_id=wait.wait_id, correlation_id=wait.correlation_id)
    with pytest.raises(ValueError):
        await client.cancel_wait()


async def test_list_get_and_cancel(server: RendezvousServer, client: Client) -> None:
    waits = [await register(client, "exec-list", node_id=f"node-{i}") for i in range(3)]
    await register(client, "exec-other")

    listed = [w async for w in client.list_waits(execution_id="exec-list", page_size=2)]
    assert sorted(w.wait_id for w in listed) == sorted(w.wait_id for w in waits)
    assert all(w.status == v1.WAIT_STATUS_WAITING_FOR_EVENTS for w in listed)

    got = (await client.get_wait(correlation_id=waits[0].correlation_id)).wait
    assert got.wait_id == waits[0].wait_id
    assert sorted(got.waiting_for) == ["api", "kafka"]
    assert got.condition

    resumes: list[v1.Resume] = []

    async def handler(resume: v1.Resume) -> None:
        resumes.append(resume)

    async with ResumeFeed([server.target], handler):
        cancelled = await client.cancel_wait(wait_id=waits[1].wait_id, reason="order withdrawn")
        assert not cancelled.already_decided
        assert cancelled.wait.status == v1.WAIT_STATUS_CANCELLED
        again = await client.cancel_wait(correlation_id=waits[1].correlation_id)
        assert again.already_decided
        await eventually(lambda: len(resumes) == 1, 10, "the cancelled wait's resume")
    assert resumes[0].outcome == v1.OUTCOME_CANCELLED
    assert resumes[0].reason == "order withdrawn"

    open_waits = [
        w
        async for w in client.list_waits(
            execution_id="exec-list", statuses=["WAIT_STATUS_WAITING_FOR_EVENTS"]
        )
    ]
    assert sorted(w.wait_id for w in open_waits) == sorted([waits[0].wait_id, waits[2].wait_id])
    cancelled_waits = [
        w async for w in client.list_waits(statuses=[v1.WAIT_STATUS_CANCELLED], page_size=1)
    ]
    assert [w.wait_id for w in cancelled_waits] == [waits[1].wait_id]
