"""``ResumeFeed``: the resume stream as an engine needs it.

It subscribes on one of several instances and moves to the next when the stream breaks or
ends (an instance restarting or gone), with backoff; runs the handler for up to
``max_in_flight`` resumes at once; acks a resume only after its handler returned; and skips
resumes it already handled (a resume comes again when its ack was lost with a stream, or its
ack timeout passed), so the handler sees each resume once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import cast

import grpc

from ._gen import rendezvous_pb2 as v1
from ._gen import rendezvous_pb2_grpc as v1_grpc
from ._transport import auth_metadata, backoff_delay, open_channel
from .errors import error_from_rpc

logger = logging.getLogger(__name__)

#: Codes no resubscription can fix: the feed stops with the error.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)

#: How long a graceful stop waits for the server to end the stream after the last ack.
CLOSE_TIMEOUT = 10.0

# HTTP/2 keepalive, so a peer that vanished without closing the connection is noticed in
# seconds; a fresh subchannel per stream, so a restarted instance is dialled at once.
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.use_local_subchannel_pool", 1),
)

Handler = Callable[[v1.Resume], Awaitable[object]]
_Call = grpc.aio.StreamStreamCall[v1.ResumeStreamRequest, v1.ResumeStreamResponse]


@dataclass
class FeedStats:
    """What a feed did so far (live: the feed updates it as it runs)."""

    handled: int = 0
    """Resumes whose handler returned (each resume id once)."""
    duplicates_skipped: int = 0
    """Deliveries of a resume already handled or being handled, not passed to the handler."""
    reconnects: int = 0
    """Times the feed subscribed again after its stream broke or ended."""
    handler_errors: int = 0
    """Handler calls that raised (those resumes were not acked and come again)."""


class _Stopped:
    """What ``ResumeFeed.stop()`` returns: awaiting it waits until the feed has stopped."""

    def __init__(self, finished: asyncio.Event) -> None:
        self._finished = finished

    def __await__(self) -> Generator[object, None, None]:
        yield from self._finished.wait().__await__()


class ResumeFeed:
    """Receives the resumes of decided waits and passes each to ``handler`` once.

    ``targets`` are instances of one deployment (``host:port``), tried in turn: the feed
    subscribes on ``targets[0]`` and, whenever the stream breaks or ends, on the next one after
    a pause (``backoff = (initial, max)`` seconds, doubling, with jitter), until stopped.
    UNAUTHENTICATED, PERMISSION_DENIED and INVALID_ARGUMENT stop it with that
    ``RendezvousError`` instead.

    ``await handler(resume)`` runs for up to ``max_in_flight`` resumes at once (the server holds
    back more until some are acked, so slow handlers slow the feed). A resume is acked after its
    handler returned; one whose handler raised is logged and not acked, so the service delivers
    it again after its ack timeout. The ids of the last ``dedupe_window`` handled resumes are
    remembered: a redelivery of one is acked without calling the handler, and a redelivery of a
    resume whose handler is still running is ignored (its ack follows). Acks always go to the
    current stream; those of handlers that finished while no stream was open are sent on the
    next one.

    Run it with ``await feed.run()`` until ``feed.stop()``, or as ``async with ResumeFeed(...)
    as feed:`` (it runs in a background task and stops on exit). Stopping is graceful: no new
    handlers start, running ones finish and are acked, then the stream is half-closed and the
    server ends it.
    """

    def __init__(
        self,
        targets: Sequence[str],
        handler: Handler,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        tenant_id: str = "",
        max_in_flight: int = 64,
        dedupe_window: int = 10_000,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if not targets:
            raise ValueError("a ResumeFeed needs at least one target")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if dedupe_window < 0:
            raise ValueError("dedupe_window must not be negative")
        if not 0 < backoff[0] <= backoff[1]:
            raise ValueError("backoff must be (initial, max) with 0 < initial <= max")
        self._targets = list(targets)
        self._handler = handler
        self._root_certificates = root_certificates
        self._metadata = auth_metadata(token)
        self._subscribe = v1.ResumeStreamRequest(
            subscribe=v1.Subscribe(tenant_id=tenant_id, max_in_flight=max_in_flight)
        )
        self._dedupe_window = dedupe_window
        self._backoff = backoff
        self._stats = FeedStats()
        # Resume ids whose handler is running, with its task.
        self._running: dict[str, asyncio.Task[None]] = {}
        # Resume ids handled recently, oldest first.
        self._handled: OrderedDict[str, None] = OrderedDict()
        # Resume ids to ack on the current stream (or the next), in order.
        self._pending_acks: dict[str, None] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        # Set when the writer has something to do: an ack, a finished handler, a stop.
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._finished = asyncio.Event()
        self._started = False
        self._connected = False
        self._background: asyncio.Task[None] | None = None

    @property
    def stats(self) -> FeedStats:
        """The feed's counters, updated as it runs."""
        return self._stats

    @property
    def in_flight(self) -> int:
        """Handlers running now (at most ``max_in_flight``)."""
        return len(self._running)

    @property
    def connected(self) -> bool:
        """Whether a stream is subscribed now (false while reconnecting)."""
        return self._connected

    def stop(self) -> _Stopped:
        """Asks the feed to stop gracefully. Returns at once; awaiting the result waits until
        ``run()`` has finished (use ``run()``'s own result for its errors)."""
        self._stop_requested.set()
        self._wake.set()
        if not self._started:
            self._finished.set()
        return _Stopped(self._finished)

    async def __aenter__(self) -> ResumeFeed:
        self._background = asyncio.create_task(self.run(), name="rendezvous-resume-feed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if self._background is not None:
            await self._background

    async def run(self) -> None:
        """Runs the feed until ``stop()``; raises a ``RendezvousError`` when the service
        refuses the subscription for good. Cancelling it cancels the running handlers."""
        if self._started:
            raise RuntimeError("a ResumeFeed runs once")
        self._started = True
        try:
            await self._subscribe_until_stopped()
        finally:
            for task in self._running.values():
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)
            self._finished.set()

    async def _subscribe_until_stopped(self) -> None:
        """Subscribes, and again on the next target after each stream, until stopped."""
        failures = 0
        for attempt in itertools.count():
            if self._stop_requested.is_set():
                break
            if attempt:
                self._stats.reconnects += 1
            target = self._targets[attempt % len(self._targets)]
            try:
                if await self._serve(target):
                    failures = 0
                if not self._stop_requested.is_set():
                    logger.warning("resume stream on %s ended; subscribing again", target)
            except grpc.aio.AioRpcError as error:
                if error.code() in FATAL_CODES:
                    logger.error(
                        "resume stream on %s refused: %s: %s",
                        target,
                        error.code().name,
                        error.details(),
                    )
                    await self._finish_handlers()
                    raise error_from_rpc(error) from error
                if not self._stop_requested.is_set():
                    logger.warning(
                        "resume stream on %s failed (%s: %s); subscribing again",
                        target,
                        error.code().name,
                        error.details(),
                    )
            if self._stop_requested.is_set():
                break
            failures += 1
            await self._pause(failures)
        await self._finish_handlers()

    async def _pause(self, failures: int) -> None:
        """Sleeps the backoff after ``failures`` failed streams, or until a stop is asked."""
        delay = backoff_delay(*self._backoff, failures)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), delay)

    async def _finish_handlers(self) -> None:
        """Waits for the running handlers when no stream is left to ack them on."""
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._pending_acks:
            logger.info(
                "resume feed stopped with %d acks unsent (no stream); "
                "those resumes will be delivered again",
                len(self._pending_acks),
            )

    async def _serve(self, target: str) -> bool:
        """Runs one stream on ``target`` until it ends (returns whether the server had accepted
        the subscription) or fails (raises its ``AioRpcError``)."""
        channel = open_channel(target, self._root_certificates, _CHANNEL_OPTIONS)
        try:
            call: _Call = v1_grpc.WaitServiceStub(channel).ResumeStream(metadata=self._metadata)
            reading = asyncio.create_task(self._read(call, target))
            writing = asyncio.create_task(self._write(call))
            try:
                await asyncio.wait({reading, writing}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    # The request side is closed (a stop) or broke: the server ends the stream.
                    await asyncio.wait({reading}, timeout=CLOSE_TIMEOUT)
                if not reading.done():
                    logger.warning("%s did not end the resume stream in time", target)
                    return False
                return reading.result()
            finally:
                self._connected = False
                for task in (reading, writing):
                    task.cancel()
                await asyncio.gather(reading, writing, return_exceptions=True)
        finally:
            await channel.close()

    async def _read(self, call: _Call, target: str) -> bool:
        """Dispatches the stream's resumes until it ends; returns whether the server accepted
        the subscription, raises the stream's error."""
        await call.initial_metadata()
        # Initial metadata while the call goes on: the server took the Subscribe.
        established = not call.done()
        if established:
            self._connected = True
            logger.info("resume stream subscribed on %s", target)
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return established
            response = cast(v1.ResumeStreamResponse, message)
            if response.HasField("resume"):
                await self._dispatch(response.resume)

    async def _write(self, call: _Call) -> None:
        """Sends the Subscribe, then the pending acks as they come; half-closes the stream
        once stopping with no handler left. A write that fails ends it (the reader then
        reports the stream's status); unsent acks stay pending for the next stream."""
        try:
            await call.write(self._subscribe)
            while True:
                self._wake.clear()
                while self._pending_acks:
                    resume_id = next(iter(self._pending_acks))
                    await call.write(v1.ResumeStreamRequest(ack=v1.Ack(resume_id=resume_id)))
                    self._pending_acks.pop(resume_id, None)
                if self._stop_requested.is_set() and not self._running:
                    await call.done_writing()
                    return
                await self._wake.wait()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            logger.debug("resume stream write failed: %s", error)

    async def _dispatch(self, resume: v1.Resume) -> None:
        """Starts the handler for a resume not seen before; acks one already handled; ignores
        one being handled, and every resume once stopping."""
        resume_id = resume.resume_id
        if self._stop_requested.is_set():
            return
        if resume_id in self._handled:
            self._stats.duplicates_skipped += 1
            self._queue_ack(resume_id)
            return
        if resume_id in self._running:
            self._stats.duplicates_skipped += 1
            return
        await self._slots.acquire()
        if self._stop_requested.is_set():
            self._slots.release()
            return
        self._running[resume_id] = asyncio.create_task(
            self._handle(resume), name=f"rendezvous-resume-{resume_id}"
        )

    async def _handle(self, resume: v1.Resume) -> None:
        """Runs the handler for one resume and queues its ack when it returned."""
        resume_id = resume.resume_id
        try:
            await self._handler(resume)
        except Exception:
            self._stats.handler_errors += 1
            logger.exception(
                "resume handler failed for resume %s (wait %s, attempt %d); not acked, "
                "it will be delivered again",
                resume_id,
                resume.wait_id,
                resume.delivery_attempt,
            )
        else:
            self._stats.handled += 1
            self._remember(resume_id)
            self._queue_ack(resume_id)
        finally:
            del self._running[resume_id]
            self._slots.release()
            self._wake.set()

    def _remember(self, resume_id: str) -> None:
        """Adds a handled resume id, forgetting the oldest beyond the dedupe window."""
        if self._dedupe_window == 0:
            return
        self._handled[resume_id] = None
        self._handled.move_to_end(resume_id)
        while len(self._handled) > self._dedupe_window:
            self._handled.popitem(last=False)

    def _queue_ack(self, resume_id: str) -> None:
        """Queues an ack for the current stream (or the next one)."""
        self._pending_acks[resume_id] = None
        self._wake.set()
