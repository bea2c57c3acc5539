"""A Temporal workflow that waits on Rendezvous for one `wait_events` node.

`WaitNodeWorkflow` registers a wait in Rendezvous through the `register_wait` activity (the
wait's execution id is the workflow id), then sleeps until the bridge (`bridge.py`) signals
it with the wait's resume, and returns that resume as its result.

Safe under retries and redeliveries:

- the activity registers with an idempotency key derived from the workflow run, so a retried
  activity gets the same wait and correlation id back instead of a second wait;
- Rendezvous delivers a resume at least once, so the workflow ignores a `resume` signal whose
  `resume_id` it has already seen, and a resume for another wait (an earlier run of the same
  workflow id) never ends this run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from rendezvous_client import (
        AlreadyExistsError,
        Client,
        InvalidArgumentError,
        PermissionDeniedError,
        RendezvousError,
        ResourceExhaustedError,
        UnauthenticatedError,
    )

RESUME_SIGNAL = "resume"
"""The signal carrying a resume (see `bridge.resume_to_signal` for its fields)."""

CORRELATION_ID_QUERY = "correlation_id"
"""The query answering the wait's correlation id, or None before the wait is registered."""

_NON_RETRYABLE_ERRORS: tuple[type[RendezvousError], ...] = (
    InvalidArgumentError,
    AlreadyExistsError,
    PermissionDeniedError,
    UnauthenticatedError,
    ResourceExhaustedError,
)
"""RegisterWait errors a retry cannot fix (proto/rendezvous/v1/rendezvous.proto, error model)."""


@dataclass(frozen=True)
class RegisterWaitInput:
    """What the `register_wait` activity sends to Rendezvous' RegisterWait."""

    execution_id: str
    node_id: str
    node_config: dict[str, Any]
    idempotency_key: str
    input_variables: dict[str, str] = field(default_factory=dict)


class RendezvousActivities:
    """The activities of `WaitNodeWorkflow`, bound to one open Rendezvous client."""

    def __init__(self, client: Client, *, tenant_id: str = "") -> None:
        """Use `client` for every call, in tenant `tenant_id` (empty: the credential's)."""
        self._client = client
        self._tenant_id = tenant_id

    @activity.defn(name="register_wait")
    async def register_wait(self, request: RegisterWaitInput) -> str:
        """Register the wait and return its correlation id.

        Idempotent: a retry with the same input returns the same wait. Errors a retry cannot
        fix (an invalid node config, a key reused with another config, a missing permission)
        fail the activity for good, with Rendezvous' message.
        """
        try:
            response = await self._client.register_wait(
                execution_id=request.execution_id,
                node_id=request.node_id,
                node_config=request.node_config,
                input_variables=request.input_variables,
                idempotency_key=request.idempotency_key,
                tenant_id=self._tenant_id,
            )
        except _NON_RETRYABLE_ERRORS as error:
            raise ApplicationError(
                f"RegisterWait refused: {error}", type="RegisterWaitRefused", non_retryable=True
            ) from error
        activity.logger.info(
            "wait %s registered (created=%s), correlation id %s",
            response.wait_id,
            response.created,
            response.correlation_id,
        )
        return str(response.correlation_id)


@workflow.defn
class WaitNodeWorkflow:
    """Waits for a Rendezvous wait's resume and returns it (a dict, see `bridge.py`)."""

    def __init__(self) -> None:
        """Start with no wait registered and no resume received."""
        self._correlation_id: str | None = None
        self._seen_resume_ids: set[str] = set()
        self._resumes: dict[str, dict[str, Any]] = {}

    @workflow.run
    async def run(
        self,
        node_config: dict[str, Any],
        node_id: str,
        input_variables: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Register the wait for `node_id` with `node_config`, then wait for its resume.

        `input_variables` fill the `{{name}}` placeholders of the node's API call.
        """
        info = workflow.info()
        self._correlation_id = await workflow.execute_activity_method(
            RendezvousActivities.register_wait,
            RegisterWaitInput(
                execution_id=info.workflow_id,
                node_id=node_id,
                node_config=node_config,
                idempotency_key=info.run_id,
                input_variables=dict(input_variables or {}),
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )
        await workflow.wait_condition(lambda: self._correlation_id in self._resumes)
        resume = self._resumes[self._correlation_id]
        workflow.logger.info(
            "node %s resumed: %s (resume %s)", node_id, resume["outcome"], resume["resume_id"]
        )
        return resume

    @workflow.signal(name=RESUME_SIGNAL)
    def resume(self, resume: dict[str, Any]) -> None:
        """Take a resume; a redelivery (same resume_id) or a second resume of a wait is ignored.

        A resume may arrive before the activity's result is recorded (the wait times out
        first); it is kept by correlation id until the workflow knows its own.
        """
        resume_id = resume["resume_id"]
        if resume_id in self._seen_resume_ids:
            return
        self._seen_resume_ids.add(resume_id)
        self._resumes.setdefault(resume["correlation_id"], resume)

    @workflow.query(name=CORRELATION_ID_QUERY)
    def correlation_id(self) -> str | None:
        """The wait's correlation id, None until the activity has registered it."""
        return self._correlation_id
