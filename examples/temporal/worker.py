"""Run the Temporal worker of `WaitNodeWorkflow` and the Rendezvous bridge in one process.

    python examples/temporal/worker.py --temporal 127.0.0.1:7233 --rendezvous 127.0.0.1:50151

Stops cleanly on Ctrl-C or SIGTERM: the bridge first (resumes being signalled finish and are
acknowledged), then the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rendezvous_client import Client as RendezvousClient
from temporalio.client import Client as TemporalClient
from temporalio.worker import Worker

from bridge import resume_feed
from workflows import RendezvousActivities, WaitNodeWorkflow

TASK_QUEUE = "rendezvous-wait-nodes"
"""The task queue `WaitNodeWorkflow` runs on unless told otherwise."""


@asynccontextmanager
async def running_worker(
    temporal: TemporalClient,
    rendezvous_target: str,
    *,
    task_queue: str = TASK_QUEUE,
    tenant_id: str = "",
) -> AsyncIterator[asyncio.Task[None]]:
    """Run the worker (workflow and activities) and the bridge while the block runs.

    The activities register waits through `rendezvous_target`; the bridge streams resumes
    from it and signals them through `temporal`. Both use tenant `tenant_id` (empty: the
    credential's, every tenant for the bridge). Yields the bridge's task, which ends before
    the block only when Rendezvous refuses the subscription for good (its error is raised on
    exit). On exit the bridge stops first, acknowledging what it signalled, then the worker.
    """
    async with RendezvousClient(rendezvous_target) as rendezvous:
        activities = RendezvousActivities(rendezvous, tenant_id=tenant_id)
        worker = Worker(
            temporal,
            task_queue=task_queue,
            workflows=[WaitNodeWorkflow],
            activities=[activities.register_wait],
        )
        async with worker:
            feed = resume_feed(temporal, [rendezvous_target], tenant_id=tenant_id)
            bridge = asyncio.create_task(feed.run(), name="rendezvous-bridge")
            try:
                yield bridge
            finally:
                await feed.stop()
                await bridge


async def _serve(args: argparse.Namespace) -> None:
    """Connect to Temporal and run the worker and the bridge until SIGINT or SIGTERM."""
    temporal = await TemporalClient.connect(args.temporal, namespace=args.namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running_worker(
        temporal, args.rendezvous, task_queue=args.task_queue, tenant_id=args.tenant
    ) as bridge:
        logging.info(
            "worker on task queue %r (Temporal %s, namespace %r) and bridge from Rendezvous %s",
            args.task_queue,
            args.temporal,
            args.namespace,
            args.rendezvous,
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, bridge}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    logging.info("stopped")


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temporal", default="127.0.0.1:7233", help="Temporal frontend address")
    parser.add_argument("--namespace", default="default", help="Temporal namespace")
    parser.add_argument("--task-queue", default=TASK_QUEUE, help="Temporal task queue")
    parser.add_argument("--rendezvous", default="127.0.0.1:50151", help="Rendezvous gRPC address")
    parser.add_argument("--tenant", default="", help="Rendezvous tenant (empty: the credential's)")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
