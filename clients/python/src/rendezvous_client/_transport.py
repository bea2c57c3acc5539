"""Channels and call metadata shared by ``Client`` and ``ResumeFeed``."""

from __future__ import annotations

import random
from collections.abc import Sequence

import grpc

ChannelOptions = Sequence[tuple[str, int | str]]


def open_channel(
    target: str, root_certificates: bytes | None, options: ChannelOptions
) -> grpc.aio.Channel:
    """A TLS channel verified against ``root_certificates`` when given, else a plaintext one."""
    if root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.aio.secure_channel(target, credentials, options=options)
    return grpc.aio.insecure_channel(target, options=options)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The ``authorization: Bearer`` metadata for ``token`` (an API key or a JWT), if any."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def backoff_delay(initial: float, cap: float, failures: int, multiplier: float = 2.0) -> float:
    """The pause after ``failures`` consecutive failures: ``initial * multiplier**(failures-1)``
    seconds capped at ``cap``, then a random point in its upper half (jitter)."""
    capped = min(cap, initial * multiplier ** (failures - 1))
    return capped / 2 + random.uniform(0, capped / 2)
