/**
 * The plain objects the client takes and returns: the messages of `rendezvous.v1`
 * (proto/rendezvous/v1/rendezvous.proto) with camelCase field names, enum values as their
 * names, timestamps as `Date` (`null` when the server left them unset) and 64-bit integers as
 * numbers.
 */

/** Every `WaitStatus` of the contract, in its order. */
export const WAIT_STATUSES = [
  'WAIT_STATUS_UNSPECIFIED',
  'WAIT_STATUS_WAITING_FOR_EVENTS',
  'WAIT_STATUS_WAITING_FOR_API',
  'WAIT_STATUS_WAITING_FOR_KAFKA',
  'WAIT_STATUS_COMPLETED',
  'WAIT_STATUS_TIMED_OUT',
  'WAIT_STATUS_CANCELLED',
  'WAIT_STATUS_FAILED',
] as const;

/** Where a wait stands: open (`WAITING_FOR_*`) or decided (the others). */
export type WaitStatus = (typeof WAIT_STATUSES)[number];

/** Every `Outcome` of the contract, in its order. */
export const OUTCOMES = [
  'OUTCOME_UNSPECIFIED',
  'OUTCOME_COMPLETED',
  'OUTCOME_PARTIAL',
  'OUTCOME_TIMED_OUT',
  'OUTCOME_CANCELLED',
  'OUTCOME_FAILED',
] as const;

/** How a wait was decided. */
export type Outcome = (typeof OUTCOMES)[number];

/** Every `DeliveryResult` of the contract, in its order. */
export const DELIVERY_RESULTS = [
  'DELIVERY_RESULT_UNSPECIFIED',
  'DELIVERY_RESULT_ACCEPTED',
  'DELIVERY_RESULT_COMPLETED',
  'DELIVERY_RESULT_BUFFERED',
  'DELIVERY_RESULT_DUPLICATE',
  'DELIVERY_RESULT_FILTERED_OUT',
  'DELIVERY_RESULT_NO_MATCHING_SOURCE',
  'DELIVERY_RESULT_ALREADY_SATISFIED',
  'DELIVERY_RESULT_LATE',
] as const;

/** What a delivery did with its event. */
export type DeliveryResult = (typeof DELIVERY_RESULTS)[number];

/** An event a wait accepted for one of its sources. */
export interface SourceEvent {
  /** `api`, `kafka`, or a `data.sources` name. */
  source: string;
  /** The event's identity (idempotency key, Kafka id or topic/partition/offset). */
  eventKey: string;
  /** The event body as JSON text; for `api`: `{"status": 200, "headers": {...}, "body": ...}`. */
  payloadJson: string;
  receivedAt: Date | null;
}

/** An event that did not count for its wait, with the reason. */
export interface IgnoredEvent {
  eventKey: string;
  at: Date | null;
  /** `execution_mismatch`, `no_matching_source`, `filtered_out`, `already_satisfied` or `late`. */
  kind: string;
  /** Human-readable reason. */
  detail: string;
}

/** A wait, with what it has and what it still needs. */
export interface Wait {
  waitId: string;
  tenantId: string;
  correlationId: string;
  executionId: string;
  nodeId: string;
  workflowId: string;
  status: WaitStatus;
  /** The compiled condition, e.g. `api && kafka`. */
  condition: string;
  /** Enabled sources. */
  sources: string[];
  received: SourceEvent[];
  /** Sources the condition mentions that have no event yet (empty once decided). */
  waitingFor: string[];
  /** Enabled sources without an event. */
  missing: string[];
  /** The most recent events that did not count. */
  ignored: IgnoredEvent[];
  ignoredTotal: number;
  createdAt: Date | null;
  deadline: Date | null;
  /** Set once decided. */
  outcome: Outcome;
  decidedAt: Date | null;
  reason: string;
  /** Optimistic-lock version: how many times the wait changed. */
  version: number;
}

/**
 * The decision of one wait, delivered at least once; `resumeId` is the same on every
 * redelivery (`ResumeFeed` deduplicates by it).
 */
export interface Resume {
  resumeId: string;
  waitId: string;
  correlationId: string;
  executionId: string;
  nodeId: string;
  tenantId: string;
  outcome: Outcome;
  /** Accepted events in arrival order. */
  events: SourceEvent[];
  /** Enabled sources without an event at the decision. */
  missingSources: string[];
  /** Why, for CANCELLED and FAILED. */
  reason: string;
  registeredAt: Date | null;
  decidedAt: Date | null;
  /** 1 on first delivery, then 2, 3, ... on redeliveries. */
  deliveryAttempt: number;
  /** The W3C trace context to continue (empty when the registration carried none). */
  traceparent: string;
  tracestate: string;
}

/** What `Client.registerWait` answers. */
export interface RegisterWaitResponse {
  waitId: string;
  correlationId: string;
  status: WaitStatus;
  /** True when this call created the wait; false when an earlier call with the same key did. */
  created: boolean;
  deadline: Date | null;
}

/** What `Client.deliverApiResponse` and `Client.deliverEvent` answer. */
export interface DeliveryResponse {
  result: DeliveryResult;
  /** The wait the event was applied to; empty when buffered. */
  waitId: string;
  /** The wait's status after the delivery. */
  status: WaitStatus;
  /** Why the event did not count, when it did not. */
  detail: string;
}

/** What `Client.cancelWait` answers. */
export interface CancelWaitResponse {
  wait: Wait;
  /** True when the wait was already decided and nothing changed. */
  alreadyDecided: boolean;
}

/** Names a wait by exactly one of its id and its correlation id. */
export type WaitKey =
  { waitId: string; correlationId?: undefined } | { correlationId: string; waitId?: undefined };

/** The arguments of `Client.registerWait`. */
export interface RegisterWaitRequest {
  /** The workflow execution; every event must carry it. */
  executionId: string;
  /** The workflow node of type `wait_events`. */
  nodeId: string;
  /** The node config: its JSON text, or a value to serialize with `JSON.stringify`. */
  nodeConfig: string | object;
  /** Values for `{{name}}` placeholders in the API call's URL, headers and body. */
  inputVariables?: Record<string, string>;
  /** Distinguishes several waits of one node in one execution (loops). */
  idempotencyKey?: string;
  /** One of the credential's tenants; empty: its only one ("default" for all tenants). */
  tenantId?: string;
  /** The workflow definition, for listing and logs only. */
  workflowId?: string;
  /** A caller-chosen correlation id; empty: the service generates one. */
  correlationId?: string;
}

/** The arguments of `Client.deliverApiResponse`. */
export interface DeliverApiResponseRequest {
  correlationId: string;
  executionId: string;
  /** The HTTP status the external service answered with. */
  httpStatus: number;
  /** The response body: bytes, text (sent as UTF-8), or a value to serialize as JSON. */
  body: Uint8Array | string | object;
  /** Identity of this delivery; a retry with the same key is a duplicate. */
  idempotencyKey: string;
  headers?: Record<string, string>;
  tenantId?: string;
}

/** The arguments of `Client.deliverEvent`. */
export interface DeliverEventRequest {
  correlationId: string;
  executionId: string;
  /** `api`, `kafka`, or a `data.sources` name. */
  source: string;
  /** The event body: JSON text, or a value to serialize with `JSON.stringify`. */
  payload: string | object;
  /** Identity of this event; a redelivery with the same key is a duplicate. */
  eventKey: string;
  tenantId?: string;
}

/** The filters of `Client.listWaits`. */
export interface ListWaitsRequest {
  /** One of the credential's tenants; empty: every tenant of the credential. */
  tenantId?: string;
  /** Empty: every status. */
  statuses?: WaitStatus[];
  /** Empty: every execution. */
  executionId?: string;
  /** Only waits created before this time. */
  createdBefore?: Date;
  /** Waits per call; 0: the server's default (100). At most 1000. */
  pageSize?: number;
}
