"""Fixtures: a fresh instance of the real service (``RENDEZVOUS_BINARY``) per test, and a
client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import RendezvousServer, binary_path

from rendezvous_client import Client, RetryPolicy


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RendezvousServer]:
    """The service on a free port with an empty SQLite database in ``tmp_path``."""
    binary = binary_path()
    if not binary.is_file():
        pytest.fail(
            f"no service binary at {binary}: build it, or set RENDEZVOUS_BINARY to its path"
        )
    instance = RendezvousServer(binary, tmp_path)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def client(server: RendezvousServer) -> AsyncIterator[Client]:
    """A client of ``server`` whose retries ride over a restart of a few seconds."""
    async with Client(
        server.target, retry=RetryPolicy(attempts=30, initial_backoff=0.05, max_backoff=0.5)
    ) as client:
        yield client
