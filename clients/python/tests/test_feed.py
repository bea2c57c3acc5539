"""``ResumeFeed`` against the real service: acks after the handler, redelivery and
deduplication, backpressure, graceful stop, fatal refusals, several targets, and an instance
killed mid-way."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from functools import partial

import grpc
import pytest
from support import (
    ACK_TIMEOUT,
    RendezvousServer,
    bounded_gather,
    deliver_api,
    deliver_kafka,
    eventually,
    free_port,
    register,
    unacked_resumes,
)

from rendezvous_client import Client, InvalidArgumentError, ResumeFeed, v1
from rendezvous_client._gen import rendezvous_pb2_grpc as v1_grpc


async def complete(
    client: Client, execution_id: str, node_id: str = "wait-1"
) -> v1.RegisterWaitResponse:
    """Registers a seed-01 wait and delivers both of its events."""
    wait = await register(client, execution_id, node_id=node_id)
    await deliver_api(client, wait, execution_id)
    await deliver_kafka(client, wait, execution_id)
    return wait


async def test_a_handler_that_raises_gets_the_resume_again(
    server: RendezvousServer, client: Client
) -> None:
    attempts: list[int] = []

    async def handler(resume: v1.Resume) -> None:
        attempts.append(resume.delivery_attempt)
        if len(attempts) == 1:
            raise RuntimeError("the engine is not ready yet")

    async with ResumeFeed([server.target], handler) as feed:
        await complete(client, "exec-raise")
        await eventually(lambda: feed.stats.handled == 1, 10, "the redelivered resume")
        await asyncio.sleep(ACK_TIMEOUT + 1)
    assert attempts == [1, 2]
    assert (feed.stats.handled, feed.stats.handler_errors) == (1, 1)


async def test_a_redelivery_while_the_handler_runs_is_ignored(
    server: RendezvousServer, client: Client
) -> None:
    calls: list[v1.Resume] = []

    async def slow_handler(resume: v1.Resume) -> None:
        calls.append(resume)
        # Longer than the ack timeout: the service sends the resume again meanwhile.
        await asyncio.sleep(ACK_TIMEOUT * 2)

    async with ResumeFeed([server.target], slow_handler) as feed:
        await complete(client, "exec-slow")
        await eventually(lambda: feed.stats.handled == 1, 10, "the slow handler")
        await asyncio.sleep(ACK_TIMEOUT + 1)
    assert len(calls) == 1
    assert feed.stats.duplicates_skipped >= 1


async def test_a_resume_sent_again_after_it_was_handled_skips_the_handler(
    server: RendezvousServer, client: Client
) -> None:
    calls: list[v1.Resume] = []

    async def handler(resume: v1.Resume) -> None:
        calls.append(resume)

    async with ResumeFeed([server.target], handler) as feed:
        wait = await complete(client, "exec-again")
        await eventually(lambda: feed.stats.handled == 1, 10, "the resume")
        # What an operator does for an engine that lost a resume: the same resume_id again.
        async with grpc.aio.insecure_channel(server.target) as channel:
            admin = v1_grpc.AdminServiceStub(channel)
            again = await admin.RedeliverResume(v1.RedeliverResumeRequest(wait_id=wait.wait_id))
        assert again.resume_id == calls[0].resume_id
        assert again.was_acked
        await eventually(lambda: feed.stats.duplicates_skipped == 1, 10, "the redelivery")
    assert len(calls) == 1
    assert feed.stats.handled == 1
    # Acked again: nothing is left for another subscriber.
    assert await unacked_resumes(server.target) == []


async def test_max_in_flight_bounds_the_running_handlers(
    server: RendezvousServer, client: Client
) -> None:
    release = asyncio.Event()
    running = 0
    most = 0

    async def handler(resume: v1.Resume) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1

    async with ResumeFeed([server.target], handler, max_in_flight=2) as feed:
        try:
            for i in range(5):
                await complete(client, f"exec-bp-{i}")
            await eventually(lambda: feed.in_flight == 2, 10, "two running handlers")
            # Past the ack timeout the service may send resumes again: still only two run.
            await asyncio.sleep(ACK_TIMEOUT + 1)
            assert (feed.in_flight, feed.stats.handled) == (2, 0)
        finally:
            release.set()
        await eventually(lambda: feed.stats.handled == 5, 10, "every resume")
    assert most == 2
    assert feed.in_flight == 0


async def test_stop_lets_running_handlers_finish_and_acks_them(
    server: RendezvousServer, client: Client
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    async def handler(resume: v1.Resume) -> None:
        started.set()
        await release.wait()
        finished.append(resume.wait_id)

    feed = ResumeFeed([server.target], handler)
    running = asyncio.create_task(feed.run())
    try:
        wait = await complete(client, "exec-stop")
        await asyncio.wait_for(started.wait(), 10)
        stopped = feed.stop()
        await asyncio.sleep(0.2)
        assert not running.done()  # waits for the handler
    finally:
        release.set()
    await asyncio.wait_for(stopped, 10)
    await running
    assert finished == [wait.wait_id]
    # The ack went out before the stream closed.
    assert await unacked_resumes(server.target) == []


async def test_a_refused_subscription_stops_the_feed(server: RendezvousServer) -> None:
    async def handler(resume: v1.Resume) -> None:
        raise AssertionError("no resume expected")

    feed = ResumeFeed([server.target], handler, tenant_id=" padded tenant ")
    with pytest.raises(InvalidArgumentError) as refused:
        await asyncio.wait_for(feed.run(), 10)
    assert "subscribe.tenant_id" in refused.value.message
    assert feed.stats.reconnects == 0


async def test_the_feed_moves_on_from_a_dead_target(
    server: RendezvousServer, client: Client
) -> None:
    seen: list[v1.Resume] = []

    async def handler(resume: v1.Resume) -> None:
        seen.append(resume)

    dead = f"127.0.0.1:{free_port()}"
    async with ResumeFeed([dead, server.target], handler) as feed:
        await eventually(lambda: feed.connected, 10, "the stream on the live target")
        await complete(client, "exec-two-targets")
        await eventually(lambda: len(seen) == 1, 10, "the resume through the live target")
    assert feed.stats.reconnects >= 1


async def test_every_resume_reaches_the_handler_once_across_a_killed_instance(
    server: RendezvousServer, client: Client
) -> None:
    n = 200
    execution = "exec-kill"
    waits = await bounded_gather(
        [partial(register, client, execution, node_id=f"node-{i}") for i in range(n)]
    )
    await bounded_gather([partial(deliver_api, client, w, execution) for w in waits])
    first, held, rest = waits[:100], waits[100:120], waits[120:]
    held_ids = {w.wait_id for w in held}
    release = asyncio.Event()
    calls: Counter[str] = Counter()

    async def handler(resume: v1.Resume) -> None:
        calls[resume.wait_id] += 1
        if resume.wait_id in held_ids:
            await release.wait()
        await asyncio.sleep(random.uniform(0, 0.02))

    async with ResumeFeed([server.target], handler) as feed:
        try:
            # The first resumes are handled (and acked, some acks still on the way at the kill).
            await bounded_gather([partial(deliver_kafka, client, w, execution) for w in first])
            await eventually(lambda: feed.stats.handled >= 50, 30, "half of the first resumes")

            # The held resumes' handlers run on: they are out, unacked, when the instance dies.
            await bounded_gather([partial(deliver_kafka, client, w, execution) for w in held])
            await eventually(lambda: held_ids <= set(calls), 30, "the held handlers")
            server.kill()

            # The rest completes while the instance comes back (the client retries meanwhile).
            delivering = asyncio.create_task(
                bounded_gather([partial(deliver_kafka, client, w, execution) for w in rest])
            )
            await server.start()
            await delivering

            # The restarted instance sends the held resumes again once their leases run out;
            # their handlers still run, so the feed ignores them.
            await eventually(lambda: feed.stats.duplicates_skipped >= 1, 30, "a redelivery")
        finally:
            release.set()
        await eventually(lambda: len(calls) == n and feed.in_flight == 0, 60, "every resume")
        # Redeliveries of resumes whose ack was lost with the killed instance come by now.
        await asyncio.sleep(ACK_TIMEOUT + 1)

    assert set(calls) == {w.wait_id for w in waits}
    assert [wait_id for wait_id, count in calls.items() if count != 1] == []
    assert feed.stats.handled == n
    assert feed.stats.reconnects >= 1
    assert feed.stats.duplicates_skipped >= 1
    statuses = Counter([w.status async for w in client.list_waits(execution_id=execution)])
    assert statuses == {v1.WAIT_STATUS_COMPLETED: n}
    assert await unacked_resumes(server.target) == []


async def test_acks_of_handlers_that_finish_while_disconnected_follow_on_the_next_stream(
    server: RendezvousServer, client: Client
) -> None:
    release = asyncio.Event()
    calls: Counter[str] = Counter()

    async def handler(resume: v1.Resume) -> None:
        calls[resume.wait_id] += 1
        await release.wait()

    async with ResumeFeed([server.target], handler) as feed:
        try:
            waits = [await complete(client, f"exec-offline-{i}") for i in range(3)]
            await eventually(lambda: feed.in_flight == 3, 10, "the running handlers")
            server.kill()
            await eventually(lambda: not feed.connected, 10, "the lost stream")
        finally:
            release.set()
        # The handlers finish with no stream to ack on; the acks wait for the next one.
        await eventually(lambda: feed.stats.handled == 3, 10, "the handlers")
        # Down past the ack timeout: the restarted instance sends the resumes again too.
        await asyncio.sleep(ACK_TIMEOUT + 0.5)
        assert not feed.connected
        await server.start()
        await eventually(lambda: feed.connected, 15, "the new stream")
        await asyncio.sleep(ACK_TIMEOUT + 1)
    assert calls == {w.wait_id: 1 for w in waits}
    assert await unacked_resumes(server.target) == []
