"""Test support: the real service binary as a subprocess, and helpers shared by the tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rendezvous_client import Client, ResumeFeed, v1

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "crates" / "domain" / "tests" / "fixtures"

# The server's timings for the tests (short, so redeliveries happen within a test).
ACK_TIMEOUT = 1.5
SERVER_ENV = {
    "RENDEZVOUS__ADMIN__LISTEN": "127.0.0.1:0",
    "RENDEZVOUS__KAFKA__ENABLED": "false",
    "RENDEZVOUS__API__ENABLED": "false",
    "RENDEZVOUS__RESUME__ACK_TIMEOUT": f"{int(ACK_TIMEOUT * 1000)}ms",
    "RENDEZVOUS__RESUME__POLL_INTERVAL": "200ms",
    "RENDEZVOUS__SWEEPER__INTERVAL": "50ms",
}
START_TIMEOUT = 30.0


def binary_path() -> Path:
    """``RENDEZVOUS_BINARY``, else the release build if there is one, else the debug build."""
    configured = os.environ.get("RENDEZVOUS_BINARY")
    if configured:
        return Path(configured)
    release = REPO / "target" / "release" / "rendezvous"
    return release if release.exists() else REPO / "target" / "debug" / "rendezvous"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RendezvousServer:
    """One instance of the service on a fixed port and SQLite file, which can be killed and
    started again on both (its output goes to ``rendezvous.log`` in ``directory``)."""

    def __init__(self, binary: Path, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.log = directory / "rendezvous.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        """The gRPC target, ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Starts the instance and waits until its port accepts connections."""
        env = {**os.environ, **SERVER_ENV, "RENDEZVOUS__SERVER__LISTEN": self.target}
        database = f"sqlite://{self.directory}/rv.sqlite?mode=rwc"
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.binary), "--database-url", database],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"rendezvous exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"rendezvous did not listen on {self.target} within {START_TIMEOUT}s:\n"
                        f"{self.log_tail()}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    def kill(self) -> None:
        """SIGKILLs the instance: no graceful shutdown, leases and streams left as they were."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait()

    async def stop(self) -> None:
        """Stops the instance gracefully (SIGTERM), killing it after 10 s."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        for _ in range(200):
            if self._process.poll() is not None:
                return
            await asyncio.sleep(0.05)
        self.kill()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the instance's output."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def seed_config(name: str = "01-wait-for-both.json") -> dict[str, Any]:
    """A seed node config from crates/domain/tests/fixtures."""
    config: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return config


async def register(
    client: Client, execution_id: str, node_id: str = "wait-1", **kwargs: Any
) -> v1.RegisterWaitResponse:
    """Registers a wait of seed config 01 (an ``api`` response and a ``kafka`` event)."""
    return await client.register_wait(
        execution_id=execution_id,
        node_id=node_id,
        node_config=seed_config(),
        input_variables={"input_data": "hello"},
        **kwargs,
    )


async def deliver_api(
    client: Client, wait: v1.RegisterWaitResponse, execution_id: str
) -> v1.DeliverApiResponseResponse:
    """Delivers the ``api`` source's response for a seed-01 wait."""
    return await client.deliver_api_response(
        correlation_id=wait.correlation_id,
        execution_id=execution_id,
        http_status=200,
        body={"accepted": True},
        idempotency_key=f"api-{wait.wait_id}",
    )


async def deliver_kafka(
    client: Client, wait: v1.RegisterWaitResponse, execution_id: str
) -> v1.DeliverEventResponse:
    """Delivers the ``kafka`` source's event (passing its filter) for a seed-01 wait."""
    return await client.deliver_event(
        correlation_id=wait.correlation_id,
        execution_id=execution_id,
        source="kafka",
        payload={"event_type": "action.completed"},
        event_key=f"kafka-{wait.wait_id}",
    )


async def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Waits until ``condition()`` holds, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def bounded_gather(calls: list[Callable[[], Awaitable[Any]]], limit: int = 16) -> list[Any]:
    """Runs the calls with at most ``limit`` at once; their results in order."""
    slots = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with slots:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


async def unacked_resumes(target: str) -> list[v1.Resume]:
    """The resumes a fresh subscriber gets within the ack timeout (and a margin): those still
    unacknowledged, since leases of closed streams are released and others run out by then."""
    received: list[v1.Resume] = []

    async def record(resume: v1.Resume) -> None:
        received.append(resume)

    async with ResumeFeed([target], record):
        await asyncio.sleep(ACK_TIMEOUT + 1)
    return received
