/**
 * The Node.js client of Rendezvous, on `@grpc/grpc-js`:
 *
 * - `Client`: RegisterWait, the deliveries, GetWait, ListWaits and CancelWait with plain
 *   objects; idempotent calls are retried on UNAVAILABLE and ABORTED (`RetryPolicy`).
 * - `ResumeFeed`: owns the resume stream: reconnects across instances, runs the handler with
 *   bounded concurrency, acks after the handler resolved, and deduplicates redeliveries.
 * - The plain objects of `rendezvous.v1` (`Resume`, `Wait`, ...) and its enums as names.
 * - `RendezvousError` and its subclasses, one per status code of the service's error model;
 *   `Status` is grpc-js's enum of status codes.
 */

export { status as Status } from '@grpc/grpc-js';

export { Client, DEFAULT_RETRY_POLICY, type ClientOptions, type RetryPolicy } from './client';
export {
  AbortedError,
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  RendezvousError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
} from './errors';
export {
  ResumeFeed,
  type FeedLogger,
  type FeedStats,
  type ResumeFeedOptions,
  type ResumeHandler,
} from './feed';
export * from './types';
