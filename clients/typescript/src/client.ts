/**
 * `Client`: the unary calls of `WaitService` and `CallbackService` with plain objects in and
 * out, retries of the idempotent ones, and errors mapped to `RendezvousError`.
 */

import * as grpc from '@grpc/grpc-js';

import { errorFromStatus } from './errors';
import { fromDate, rpc, toDate, toWait, type Rpc, type Timestamp, type Wire } from './proto';
import { backoffDelay, callMetadata, channelCredentials, sleep } from './transport';
import type {
  CancelWaitResponse,
  DeliverApiResponseRequest,
  DeliverEventRequest,
  DeliveryResponse,
  ListWaitsRequest,
  RegisterWaitRequest,
  RegisterWaitResponse,
  Wait,
  WaitKey,
  WaitStatus,
} from './types';

/**
 * How idempotent calls (RegisterWait, the deliveries, GetWait, ListWaits) are retried on
 * UNAVAILABLE and ABORTED: at most `attempts` calls in all, pausing `initialBackoffMs *
 * multiplier ** (n - 1)` milliseconds (capped at `maxBackoffMs`, then a random point in its
 * upper half) after the n-th failure. `attempts: 1` disables retries.
 */
export interface RetryPolicy {
  attempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
}

/** The retry policy of a `Client` given none. */
export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({
  attempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 2000,
  multiplier: 2,
});

/** How a `Client` connects and calls. */
export interface ClientOptions {
  /** Sent as `authorization: Bearer <token>` (an API key or a JWT). */
  token?: string;
  /** PEM root certificates: the channel uses TLS verified against them. Default: plaintext. */
  rootCerts?: Buffer;
  /** Overrides of `DEFAULT_RETRY_POLICY`. */
  retry?: Partial<RetryPolicy>;
  /** Each attempt's deadline in milliseconds; `Infinity`: none. Default 30 000. */
  timeoutMs?: number;
}

/** Codes after which an idempotent call is made again. */
const RETRYABLE_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.ABORTED,
]);

interface WireRegisterWaitRequest {
  executionId: string;
  nodeId: string;
  nodeConfigJson: string;
  inputVariables: Record<string, string>;
  idempotencyKey: string;
  tenantId: string;
  workflowId: string;
  correlationId: string;
}

interface WireDeliverApiResponseRequest {
  correlationId: string;
  executionId: string;
  httpStatus: number;
  headers: Record<string, string>;
  body: Buffer;
  idempotencyKey: string;
  tenantId: string;
}

interface WireDeliverEventRequest {
  correlationId: string;
  executionId: string;
  source: string;
  payloadJson: string;
  eventKey: string;
  tenantId: string;
}

/** The `key` oneof of GetWait and CancelWait: exactly one member set. */
type WireWaitKey = { waitId: string } | { correlationId: string };

type WireGetWaitRequest = WireWaitKey & { tenantId: string };

type WireCancelWaitRequest = WireWaitKey & { tenantId: string; reason: string };

interface WireListWaitsRequest {
  tenantId: string;
  statuses: WaitStatus[];
  executionId: string;
  createdBefore: Timestamp | null;
  pageSize: number;
  pageToken: string;
}

interface WireListWaitsResponse {
  waits: Wire<Wait>[];
  nextPageToken: string;
}

const REGISTER_WAIT = rpc<WireRegisterWaitRequest, Wire<RegisterWaitResponse>>(
  'WaitService',
  'RegisterWait',
);
const GET_WAIT = rpc<WireGetWaitRequest, { wait: Wire<Wait> | null }>('WaitService', 'GetWait');
const LIST_WAITS = rpc<WireListWaitsRequest, WireListWaitsResponse>('WaitService', 'ListWaits');
const CANCEL_WAIT = rpc<
  WireCancelWaitRequest,
  { wait: Wire<Wait> | null; alreadyDecided: boolean }
>('WaitService', 'CancelWait');
const DELIVER_API_RESPONSE = rpc<WireDeliverApiResponseRequest, DeliveryResponse>(
  'CallbackService',
  'DeliverApiResponse',
);
const DELIVER_EVENT = rpc<WireDeliverEventRequest, DeliveryResponse>(
  'CallbackService',
  'DeliverEvent',
);

/** JSON text as given, or `value` serialized. */
function jsonText(value: string | object): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** An HTTP body as bytes: as given, UTF-8 encoded, or serialized as JSON. */
function bodyBytes(body: Uint8Array | string | object): Buffer {
  if (body instanceof Uint8Array) {
    return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  }
  return Buffer.from(jsonText(body), 'utf8');
}

/** The `key` oneof of a request naming a wait; throws unless exactly one is given. */
function oneKey(key: WaitKey): WireWaitKey {
  const { waitId, correlationId } = key;
  if (waitId !== undefined && correlationId === undefined) {
    return { waitId };
  }
  if (correlationId !== undefined && waitId === undefined) {
    return { correlationId };
  }
  throw new TypeError('give exactly one of waitId and correlationId');
}

/** Whether grpc-js reported a call's status (rather than a programming error). */
function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && typeof (error as { code?: unknown }).code === 'number';
}

/** A wait the server must have sent (GetWait and CancelWait always answer with one). */
function requireWait(wait: Wire<Wait> | null, method: string): Wait {
  if (wait === null) {
    throw new Error(`${method} answered without a wait`);
  }
  return toWait(wait);
}

/**
 * A client of one Rendezvous endpoint (an instance, or a load balancer in front of several):
 *
 * ```ts
 * const client = new Client('127.0.0.1:50151');
 * const wait = await client.registerWait({ executionId: 'exec-1', nodeId: 'wait-1', nodeConfig });
 * client.close();
 * ```
 *
 * Every method takes one object of arguments and resolves to a plain object; failures reject
 * with a `RendezvousError` subclass carrying the gRPC code and the server's message. Argument
 * mistakes the client can see itself throw a `TypeError`.
 */
export class Client {
  private readonly channel: grpc.Client;
  private readonly token: string | undefined;
  private readonly retry: Readonly<RetryPolicy>;
  private readonly timeoutMs: number;

  /** A client of `target` (`host:port`); it connects on the first call. */
  constructor(target: string, options: ClientOptions = {}) {
    const retry = { ...DEFAULT_RETRY_POLICY, ...options.retry };
    if (!Number.isInteger(retry.attempts) || retry.attempts < 1) {
      throw new RangeError('retry.attempts must be an integer of at least 1');
    }
    if (!(retry.initialBackoffMs > 0 && retry.initialBackoffMs <= retry.maxBackoffMs)) {
      throw new RangeError('retry needs 0 < initialBackoffMs <= maxBackoffMs');
    }
    if (!(retry.multiplier >= 1)) {
      throw new RangeError('retry.multiplier must be at least 1');
    }
    const timeoutMs = options.timeoutMs ?? 30_000;
    if (!(timeoutMs > 0)) {
      throw new RangeError('timeoutMs must be positive');
    }
    this.retry = retry;
    this.timeoutMs = timeoutMs;
    this.token = options.token;
    // grpc-js's own reconnect backoff follows the policy, so a retry after a restart finds the
    // channel trying again rather than waiting out grpc's default of 1 s and more.
    this.channel = new grpc.Client(target, channelCredentials(options.rootCerts), {
      'grpc.initial_reconnect_backoff_ms': Math.ceil(retry.initialBackoffMs),
      'grpc.max_reconnect_backoff_ms': Math.ceil(retry.maxBackoffMs),
    });
  }

  /** Closes the channel. */
  close(): void {
    this.channel.close();
  }

  /**
   * Registers a wait for a `wait_events` node. Idempotent per (tenant, executionId, nodeId,
   * idempotencyKey): a repeat returns the same wait with `created: false`. Retried.
   */
  async registerWait(request: RegisterWaitRequest): Promise<RegisterWaitResponse> {
    const response = await this.call(
      REGISTER_WAIT,
      {
        executionId: request.executionId,
        nodeId: request.nodeId,
        nodeConfigJson: jsonText(request.nodeConfig),
        inputVariables: { ...request.inputVariables },
        idempotencyKey: request.idempotencyKey ?? '',
        tenantId: request.tenantId ?? '',
        workflowId: request.workflowId ?? '',
        correlationId: request.correlationId ?? '',
      },
      true,
    );
    return { ...response, deadline: toDate(response.deadline) };
  }

  /**
   * Delivers the external API's response for a wait's `api` source. A repeat with the same
   * `idempotencyKey` answers `DELIVERY_RESULT_DUPLICATE`. Retried.
   */
  async deliverApiResponse(request: DeliverApiResponseRequest): Promise<DeliveryResponse> {
    return this.call(
      DELIVER_API_RESPONSE,
      {
        correlationId: request.correlationId,
        executionId: request.executionId,
        httpStatus: request.httpStatus,
        headers: { ...request.headers },
        body: bodyBytes(request.body),
        idempotencyKey: request.idempotencyKey,
        tenantId: request.tenantId ?? '',
      },
      true,
    );
  }

  /**
   * Delivers an event for a named source of a wait (`api`, `kafka` or a `data.sources`
   * name). A repeat with the same `eventKey` answers `DELIVERY_RESULT_DUPLICATE`. Retried.
   */
  async deliverEvent(request: DeliverEventRequest): Promise<DeliveryResponse> {
    return this.call(
      DELIVER_EVENT,
      {
        correlationId: request.correlationId,
        executionId: request.executionId,
        source: request.source,
        payloadJson: jsonText(request.payload),
        eventKey: request.eventKey,
        tenantId: request.tenantId ?? '',
      },
      true,
    );
  }

  /**
   * One wait by `waitId` or by `correlationId` (exactly one), with what it has received,
   * still waits for, and ignored. Retried.
   */
  async getWait(request: WaitKey & { tenantId?: string }): Promise<Wait> {
    const response = await this.call(
      GET_WAIT,
      { ...oneKey(request), tenantId: request.tenantId ?? '' },
      true,
    );
    return requireWait(response.wait, 'GetWait');
  }

  /**
   * Every wait matching the filters, newest first, fetched page after page (each page's call
   * retried): `for await (const wait of client.listWaits({ executionId })) ...`.
   */
  async *listWaits(request: ListWaitsRequest = {}): AsyncGenerator<Wait, void, undefined> {
    const wire: WireListWaitsRequest = {
      tenantId: request.tenantId ?? '',
      statuses: [...(request.statuses ?? [])],
      executionId: request.executionId ?? '',
      createdBefore: request.createdBefore === undefined ? null : fromDate(request.createdBefore),
      pageSize: request.pageSize ?? 0,
      pageToken: '',
    };
    for (;;) {
      const page = await this.call(LIST_WAITS, wire, true);
      for (const wait of page.waits) {
        yield toWait(wait);
      }
      if (!page.nextPageToken) {
        return;
      }
      wire.pageToken = page.nextPageToken;
    }
  }

  /**
   * Cancels an open wait by `waitId` or `correlationId` (exactly one); the engine gets a
   * resume with outcome CANCELLED. A decided wait is returned unchanged with
   * `alreadyDecided: true`. Not retried: a retry of a cancel whose answer was lost would
   * report `alreadyDecided` for the cancel it made itself.
   */
  async cancelWait(
    request: WaitKey & { reason?: string; tenantId?: string },
  ): Promise<CancelWaitResponse> {
    const response = await this.call(
      CANCEL_WAIT,
      { ...oneKey(request), tenantId: request.tenantId ?? '', reason: request.reason ?? '' },
      false,
    );
    return {
      wait: requireWait(response.wait, 'CancelWait'),
      alreadyDecided: response.alreadyDecided,
    };
  }

  /** Makes a call, retrying it per the policy when `idempotent`. */
  private async call<Request, Response>(
    method: Rpc<Request, Response>,
    request: Request,
    idempotent: boolean,
  ): Promise<Response> {
    for (let failures = 1; ; failures++) {
      try {
        return await this.attempt(method, request);
      } catch (error) {
        if (!isServiceError(error)) {
          throw error;
        }
        if (!idempotent || !RETRYABLE_CODES.has(error.code) || failures >= this.retry.attempts) {
          throw errorFromStatus(error, error);
        }
      }
      const { initialBackoffMs, maxBackoffMs, multiplier } = this.retry;
      await sleep(backoffDelay(initialBackoffMs, maxBackoffMs, failures, multiplier));
    }
  }

  /** One call with the attempt's deadline; rejects with grpc-js's `ServiceError`. */
  private attempt<Request, Response>(
    method: Rpc<Request, Response>,
    request: Request,
  ): Promise<Response> {
    const options: grpc.CallOptions = Number.isFinite(this.timeoutMs)
      ? { deadline: Date.now() + this.timeoutMs }
      : {};
    return new Promise((resolve, reject) => {
      this.channel.makeUnaryRequest(
        method.path,
        method.serialize,
        method.deserialize,
        request,
        callMetadata(this.token),
        options,
        (error, response) => {
          if (error) {
            reject(error);
          } else {
            resolve(response as Response);
          }
        },
      );
    });
  }
}
