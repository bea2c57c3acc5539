/**
 * Errors of the client: one `RendezvousError` subclass per status code of the service's error
 * model (proto/rendezvous/v1/rendezvous.proto), carrying the code and the server's message
 * (which names what was wrong, e.g. `node_config: data.kafkaEvent.topic: required when
 * enabled`).
 */

import { status as Status } from '@grpc/grpc-js';

/** A call the service refused or that could not be made; see `code` and `details`. */
export class RendezvousError extends Error {
  /** The gRPC status code. */
  readonly code: Status;
  /** The server's message (the gRPC status details). */
  readonly details: string;

  /** `message` reads `<CODE NAME>: <details>`; `cause` is grpc-js's error, when there was one. */
  constructor(code: Status, details: string, options?: ErrorOptions) {
    super(`${Status[code] ?? `status ${code}`}: ${details}`, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** A field is missing or malformed, or the node config is invalid (`path: reason` list). */
export class InvalidArgumentError extends RendezvousError {}

/** No credential, or one that is not valid. */
export class UnauthenticatedError extends RendezvousError {}

/** The credential lacks the RPC's role, or the request names a tenant not its own. */
export class PermissionDeniedError extends RendezvousError {}

/** No such wait among the caller's tenants. */
export class NotFoundError extends RendezvousError {}

/** An idempotency key (or correlation id) was reused with a different request. */
export class AlreadyExistsError extends RendezvousError {}

/** The request does not fit the wait's state, e.g. an execution id mismatch. */
export class FailedPreconditionError extends RendezvousError {}

/** A message, payload, node config or page size is over its limit. Not retryable. */
export class ResourceExhaustedError extends RendezvousError {}

/** Too many concurrent writers on one wait; safe to retry (the client already did). */
export class AbortedError extends RendezvousError {}

/** The service or its database is unreachable; safe to retry (the client already did). */
export class UnavailableError extends RendezvousError {}

/** The call did not finish within its deadline. */
export class DeadlineExceededError extends RendezvousError {}

/** A bug in the service; nothing half-done was committed. */
export class InternalError extends RendezvousError {}

const BY_CODE: ReadonlyMap<Status, typeof RendezvousError> = new Map([
  [Status.INVALID_ARGUMENT, InvalidArgumentError],
  [Status.UNAUTHENTICATED, UnauthenticatedError],
  [Status.PERMISSION_DENIED, PermissionDeniedError],
  [Status.NOT_FOUND, NotFoundError],
  [Status.ALREADY_EXISTS, AlreadyExistsError],
  [Status.FAILED_PRECONDITION, FailedPreconditionError],
  [Status.RESOURCE_EXHAUSTED, ResourceExhaustedError],
  [Status.ABORTED, AbortedError],
  [Status.UNAVAILABLE, UnavailableError],
  [Status.DEADLINE_EXCEEDED, DeadlineExceededError],
  [Status.INTERNAL, InternalError],
]);

/** The `RendezvousError` subclass for a failed call's status (grpc-js's error as `cause`). */
export function errorFromStatus(
  status: { code: Status; details: string },
  cause?: unknown,
): RendezvousError {
  const ErrorClass = BY_CODE.get(status.code) ?? RendezvousError;
  return new ErrorClass(status.code, status.details, cause === undefined ? undefined : { cause });
}
