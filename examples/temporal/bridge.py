"""The bridge: Rendezvous resumes in, Temporal signals out.

A `ResumeFeed` streams every decided wait's resume; `ResumeSignaller` signals the workflow
whose id is the resume's execution id with the resume as a plain dict. The feed acknowledges
a resume only after the handler returned, that is after Temporal accepted the signal, so a
bridge that dies in between loses nothing: Rendezvous delivers the resume again (to this
bridge or another replica) and the workflow drops the duplicate by `resume_id`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from rendezvous_client import ResumeFeed, v1
from temporalio.client import Client as TemporalClient
from temporalio.service import RPCError, RPCStatusCode

from workflows import RESUME_SIGNAL

log = logging.getLogger(__name__)


def outcome_name(resume: v1.Resume) -> str:
    """Name the resume's outcome without its enum prefix: COMPLETED, PARTIAL, TIMED_OUT, ..."""
    return v1.Outcome.Name(resume.outcome).removeprefix("OUTCOME_")


def resume_to_signal(resume: v1.Resume) -> dict[str, Any]:
    """The `resume` signal's payload: the resume as plain JSON-friendly values.

    Each event's payload is decoded from its JSON text (for `api`:
    `{"status": ..., "headers": {...}, "body": ...}`).
    """
    return {
        "resume_id": resume.resume_id,
        "wait_id": resume.wait_id,
        "correlation_id": resume.correlation_id,
        "node_id": resume.node_id,
        "outcome": outcome_name(resume),
        "events": [
            {
                "source": event.source,
                "event_key": event.event_key,
                "payload": json.loads(event.payload_json),
            }
            for event in resume.events
        ],
        "missing_sources": list(resume.missing_sources),
        "reason": resume.reason,
    }


class ResumeSignaller:
    """The feed's handler: signals the resume's workflow, returning only once it is signalled."""

    def __init__(self, temporal: TemporalClient) -> None:
        """Signal workflows through `temporal` (its namespace is the workflows')."""
        self._temporal = temporal

    async def __call__(self, resume: v1.Resume) -> None:
        """Signal workflow `resume.execution_id`; raise (no ack, redelivered) if that failed.

        A workflow that does not exist or has already closed can never take the signal: the
        resume is then logged and acknowledged rather than redelivered forever.
        """
        handle = self._temporal.get_workflow_handle(resume.execution_id)
        try:
            await handle.signal(RESUME_SIGNAL, resume_to_signal(resume))
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            log.warning(
                "resume %s of wait %s dropped: workflow %s cannot be signalled: %s",
                resume.resume_id,
                resume.wait_id,
                resume.execution_id,
                error.message,
            )
            return
        log.info(
            "resume %s (%s) signalled to workflow %s",
            resume.resume_id,
            outcome_name(resume),
            resume.execution_id,
        )


def resume_feed(
    temporal: TemporalClient,
    rendezvous_targets: list[str],
    *,
    tenant_id: str = "",
) -> ResumeFeed:
    """A feed of the resumes of `tenant_id` (empty: every tenant) signalled through `temporal`."""
    return ResumeFeed(rendezvous_targets, ResumeSignaller(temporal), tenant_id=tenant_id)
