/**
 * `ResumeFeed`: the resume stream as an engine needs it. It subscribes on one of several
 * instances and moves to the next when the stream breaks or ends (an instance restarting or
 * gone), with backoff; runs the handler for up to `maxInFlight` resumes at once; acks a resume
 * only after its handler resolved; and skips resumes it already handled (a resume comes again
 * when its ack was lost with a stream, or its ack timeout passed), so the handler sees each
 * resume once.
 */

import * as grpc from '@grpc/grpc-js';

import { errorFromStatus } from './errors';
import { rpc, toResume, type Wire } from './proto';
import { backoffDelay, callMetadata, channelCredentials } from './transport';
import type { Resume } from './types';
import { IdWindow } from './window';

/** Handles one resume; a rejection (or throw) leaves it unacked, so it is delivered again. */
export type ResumeHandler = (resume: Resume) => Promise<void> | void;

/** Where a feed reports what it does; `console` by default. */
export interface FeedLogger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string, error?: unknown): void;
}

/** How a `ResumeFeed` subscribes and runs. */
export interface ResumeFeedOptions {
  /** Sent as `authorization: Bearer <token>` (an API key or a JWT). */
  token?: string;
  /** PEM root certificates: the channels use TLS verified against them. Default: plaintext. */
  rootCerts?: Buffer;
  /** Only this tenant's resumes (one of the credential's). Default: every tenant of it. */
  tenantId?: string;
  /** Handlers running at once, and unacked resumes the server holds for the stream. Default 64. */
  maxInFlight?: number;
  /** How many handled resume ids are remembered to skip redeliveries. Default 10 000. */
  dedupeWindow?: number;
  /** The pause before subscribing again: `initialMs`, doubling up to `maxMs`, with jitter. */
  backoff?: { initialMs: number; maxMs: number };
  /** Default: `console`. */
  logger?: FeedLogger;
}

/** What a feed did so far. */
export interface FeedStats {
  /** Resumes whose handler resolved (each resume id once). */
  handled: number;
  /** Deliveries of a resume already handled or being handled, not passed to the handler. */
  duplicates: number;
  /** Times the feed subscribed again after its stream broke or ended. */
  reconnects: number;
  /** Handler calls that rejected (those resumes were not acked and come again). */
  handlerErrors: number;
}

/** Codes no resubscription can fix: the feed stops with the error. */
const FATAL_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.INVALID_ARGUMENT,
]);

/** How long a graceful stop waits for the server to end the stream after the last ack. */
const CLOSE_TIMEOUT_MS = 10_000;

/**
 * HTTP/2 keepalive, so a peer that vanished without closing the connection is noticed in
 * seconds; a fresh subchannel per stream, so a restarted instance is dialled at once.
 */
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.use_local_subchannel_pool': 1,
};

type ResumeStreamRequest =
  { subscribe: { tenantId: string; maxInFlight: number } } | { ack: { resumeId: string } };

interface ResumeStreamResponse {
  resume?: Wire<Resume> | null;
}

const RESUME_STREAM = rpc<ResumeStreamRequest, ResumeStreamResponse>('WaitService', 'ResumeStream');

/** What the feed hears from its current stream. */
interface StreamListener {
  /** The server took the Subscribe (it sent the response headers). */
  established(): void;
  /** A resume arrived. */
  resume(resume: Resume): void;
}

/** One `ResumeStream` call, on a channel of its own, closed when the call ends. */
class Subscription {
  /** Whether the server took the Subscribe. */
  established = false;
  /** Resolves with the call's status when it ended, whichever way. */
  readonly ended: Promise<grpc.StatusObject>;
  private readonly channel: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<ResumeStreamRequest, ResumeStreamResponse>;
  private finished = false;
  private halfClosed = false;
  private held: Resume | null = null;
  private closeTimer: NodeJS.Timeout | undefined;

  constructor(
    target: string,
    credentials: grpc.ChannelCredentials,
    metadata: grpc.Metadata,
    subscribe: ResumeStreamRequest,
    listener: StreamListener,
  ) {
    this.channel = new grpc.Client(target, credentials, CHANNEL_OPTIONS);
    this.call = this.channel.makeBidiStreamRequest(
      RESUME_STREAM.path,
      RESUME_STREAM.serialize,
      RESUME_STREAM.deserialize,
      metadata,
    );
    this.ended = new Promise((resolve) => {
      this.call.on('status', (status: grpc.StatusObject) => {
        this.finished = true;
        this.held = null;
        clearTimeout(this.closeTimer);
        this.channel.close();
        resolve(status);
      });
    });
    // Failures are reported by the 'status' event too.
    this.call.on('error', () => undefined);
    this.call.on('metadata', () => {
      this.established = true;
      listener.established();
    });
    this.call.on('data', (response: ResumeStreamResponse) => {
      // Resumes still buffered when the call ended are not ours any more (their leases went).
      if (!this.finished && response.resume) {
        listener.resume(toResume(response.resume));
      }
    });
    this.call.write(subscribe);
  }

  /** Whether acks can be written: established, neither ended nor half-closed. */
  get writable(): boolean {
    return this.established && !this.finished && !this.halfClosed;
  }

  /** Writes an ack (see `writable`). */
  ack(resumeId: string): void {
    this.call.write({ ack: { resumeId } });
  }

  /** Keeps a resume that found no free handler and stops reading until `takeHeld()`. */
  hold(resume: Resume): void {
    this.held = resume;
    this.call.pause();
  }

  /**
   * The held resume, if any (the caller dispatches it at once); reading goes on from the
   * next tick.
   */
  takeHeld(): Resume | null {
    const held = this.held;
    if (held !== null) {
      this.held = null;
      this.call.resume();
    }
    return held;
  }

  /** Drops the held resume and reads on, so the end of the call can be seen. */
  dropHeld(): void {
    this.held = null;
    this.call.resume();
  }

  /** Half-closes the call (once), so the server ends it. */
  halfClose(): void {
    if (!this.halfClosed && !this.finished) {
      this.halfClosed = true;
      this.call.end();
    }
  }

  /** Cancels the call unless it ends within `ms` (once). */
  cancelAfter(ms: number): void {
    if (this.closeTimer === undefined && !this.finished) {
      this.closeTimer = setTimeout(() => this.call.cancel(), ms);
    }
  }
}

/**
 * Receives the resumes of decided waits and passes each to `handler` once.
 *
 * `targets` are instances of one deployment (`host:port`), tried in turn: the feed subscribes
 * on `targets[0]` and, whenever the stream breaks or ends, on the next one after a pause
 * (`backoff`, doubling, with jitter), until stopped. UNAUTHENTICATED, PERMISSION_DENIED and
 * INVALID_ARGUMENT reject `run()` with that `RendezvousError` instead.
 *
 * `handler(resume)` runs for up to `maxInFlight` resumes at once (the feed stops reading, and
 * the server holds back more until some are acked, so slow handlers slow the feed). A resume
 * is acked after its handler resolved; one whose handler rejected is logged and not acked, so
 * the service delivers it again after its ack timeout. The ids of the last `dedupeWindow`
 * handled resumes are remembered: a redelivery of one is acked without calling the handler,
 * and a redelivery of a resume whose handler is still running is ignored (its ack follows).
 * Acks always go to the current stream; those of handlers that finished while no stream was
 * open are sent on the next one.
 *
 * `run()` resolves once `stop()` was called and the feed has stopped. Stopping is graceful:
 * no new handlers start, running ones finish and are acked, then the stream is half-closed
 * and the server ends it.
 */
export class ResumeFeed {
  private readonly targets: readonly string[];
  private readonly handler: ResumeHandler;
  private readonly token: string | undefined;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly subscribe: ResumeStreamRequest;
  private readonly maxInFlight: number;
  private readonly backoff: { initialMs: number; maxMs: number };
  private readonly logger: FeedLogger;
  private readonly counters: FeedStats = {
    handled: 0,
    duplicates: 0,
    reconnects: 0,
    handlerErrors: 0,
  };
  /** Resume ids handled recently. */
  private readonly handled: IdWindow;
  /** Resume ids whose handler is running, with the handler's settling. */
  private readonly running = new Map<string, Promise<void>>();
  /** Resume ids to ack on the current stream (or the next one), in order. */
  private readonly pendingAcks = new Set<string>();
  /** The stream in progress, established or not. */
  private subscription: Subscription | null = null;
  private stopRequested = false;
  private started = false;
  /** Ends the pause between streams early (set while pausing). */
  private wake: (() => void) | null = null;
  private readonly finished: Promise<void>;
  private markFinished: () => void = () => undefined;

  /** A feed over `targets` passing each resume to `handler`; `run()` starts it. */
  constructor(targets: readonly string[], handler: ResumeHandler, options: ResumeFeedOptions = {}) {
    const maxInFlight = options.maxInFlight ?? 64;
    const dedupeWindow = options.dedupeWindow ?? 10_000;
    const backoff = options.backoff ?? { initialMs: 100, maxMs: 5_000 };
    if (targets.length === 0) {
      throw new RangeError('a ResumeFeed needs at least one target');
    }
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1) {
      throw new RangeError('maxInFlight must be an integer of at least 1');
    }
    if (!Number.isInteger(dedupeWindow) || dedupeWindow < 0) {
      throw new RangeError('dedupeWindow must be a non-negative integer');
    }
    if (!(backoff.initialMs > 0 && backoff.initialMs <= backoff.maxMs)) {
      throw new RangeError('backoff needs 0 < initialMs <= maxMs');
    }
    this.targets = [...targets];
    this.handler = handler;
    this.token = options.token;
    this.credentials = channelCredentials(options.rootCerts);
    this.subscribe = { subscribe: { tenantId: options.tenantId ?? '', maxInFlight } };
    this.maxInFlight = maxInFlight;
    this.backoff = { ...backoff };
    this.logger = options.logger ?? console;
    this.handled = new IdWindow(dedupeWindow);
    this.finished = new Promise((resolve) => {
      this.markFinished = resolve;
    });
  }

  /** The feed's counters now (a copy). */
  get stats(): FeedStats {
    return { ...this.counters };
  }

  /** Handlers running now (at most `maxInFlight`). */
  get inFlight(): number {
    return this.running.size;
  }

  /**
   * Runs the feed until `stop()`; rejects with a `RendezvousError` when the service refuses
   * the subscription for good (after the running handlers finished). Runs once.
   */
  async run(): Promise<void> {
    if (this.started) {
      throw new Error('a ResumeFeed runs once');
    }
    this.started = true;
    try {
      await this.subscribeUntilStopped();
    } finally {
      this.markFinished();
    }
  }

  /**
   * Asks the feed to stop gracefully; resolves when it has stopped (at once if it never ran).
   * `run()`'s own promise tells whether it stopped with an error.
   */
  stop(): Promise<void> {
    if (!this.stopRequested) {
      this.stopRequested = true;
      this.wake?.();
      this.subscription?.dropHeld();
      this.closeWhenIdle();
      if (!this.started) {
        this.markFinished();
      }
    }
    return this.finished;
  }

  /** Subscribes, and again on the next target after each stream, until stopped. */
  private async subscribeUntilStopped(): Promise<void> {
    let failures = 0;
    for (let attempt = 0; !this.stopRequested; attempt++) {
      if (attempt > 0) {
        this.counters.reconnects++;
      }
      const target = this.targets[attempt % this.targets.length] as string;
      const { established, status } = await this.serve(target);
      if (established) {
        failures = 0;
      }
      const reason = `${grpc.status[status.code]}: ${status.details}`;
      if (FATAL_CODES.has(status.code)) {
        this.logger.error(`resume stream on ${target} refused: ${reason}`);
        await this.finishHandlers();
        throw errorFromStatus(status);
      }
      if (this.stopRequested) {
        break;
      }
      this.logger.warn(
        status.code === grpc.status.OK
          ? `resume stream on ${target} ended; subscribing again`
          : `resume stream on ${target} failed (${reason}); subscribing again`,
      );
      failures++;
      await this.pause(backoffDelay(this.backoff.initialMs, this.backoff.maxMs, failures));
    }
    await this.finishHandlers();
  }

  /** Runs one stream on `target` until it ends; whether the server had taken it, and how. */
  private async serve(
    target: string,
  ): Promise<{ established: boolean; status: grpc.StatusObject }> {
    const subscription = new Subscription(
      target,
      this.credentials,
      callMetadata(this.token),
      this.subscribe,
      {
        established: () => {
          this.logger.info(`resume stream subscribed on ${target}`);
          this.flushAcks();
          this.closeWhenIdle();
        },
        resume: (resume) => this.dispatch(resume),
      },
    );
    this.subscription = subscription;
    try {
      const status = await subscription.ended;
      return { established: subscription.established, status };
    } finally {
      this.subscription = null;
    }
  }

  /** Sleeps `ms`, or until a stop is asked. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  /** Waits for the running handlers when no stream is left to ack them on. */
  private async finishHandlers(): Promise<void> {
    while (this.running.size > 0) {
      await Promise.all(this.running.values());
    }
    if (this.pendingAcks.size > 0) {
      this.logger.info(
        `resume feed stopped with ${this.pendingAcks.size} acks unsent (no stream); ` +
          'those resumes will be delivered again',
      );
    }
  }

  /**
   * Starts the handler for a resume not seen before (holding it, with reading paused, while
   * every slot is taken); acks one already handled; ignores one being handled, and every
   * resume once stopping.
   */
  private dispatch(resume: Resume): void {
    const { resumeId } = resume;
    if (this.stopRequested) {
      return;
    }
    if (this.handled.has(resumeId)) {
      this.counters.duplicates++;
      this.queueAck(resumeId);
      return;
    }
    if (this.running.has(resumeId)) {
      this.counters.duplicates++;
      return;
    }
    if (this.running.size >= this.maxInFlight) {
      this.subscription?.hold(resume);
      return;
    }
    const settled = this.handle(resume).finally(() => {
      this.running.delete(resumeId);
      this.slotFreed();
    });
    this.running.set(resumeId, settled);
  }

  /** Runs the handler for one resume and queues its ack when it resolved. */
  private async handle(resume: Resume): Promise<void> {
    try {
      await this.handler(resume);
    } catch (error) {
      this.counters.handlerErrors++;
      this.logger.error(
        `resume handler failed for resume ${resume.resumeId} (wait ${resume.waitId}, ` +
          `attempt ${resume.deliveryAttempt}); not acked, it will be delivered again`,
        error,
      );
      return;
    }
    this.counters.handled++;
    this.handled.add(resume.resumeId);
    this.queueAck(resume.resumeId);
  }

  /** A handler finished: starts the held resume, or closes the stream when stopping. */
  private slotFreed(): void {
    const held = this.subscription?.takeHeld();
    if (held) {
      this.dispatch(held);
    }
    this.closeWhenIdle();
  }

  /** Queues an ack for the current stream (or the next one). */
  private queueAck(resumeId: string): void {
    this.pendingAcks.add(resumeId);
    this.flushAcks();
  }

  /** Writes the pending acks when the current stream can take them. */
  private flushAcks(): void {
    const subscription = this.subscription;
    if (!subscription?.writable) {
      return;
    }
    for (const resumeId of this.pendingAcks) {
      subscription.ack(resumeId);
    }
    this.pendingAcks.clear();
  }

  /**
   * Once stopping with no handler left: sends the pending acks and half-closes the stream
   * (when the server took it; else when it does), and cancels it if the server has not ended
   * it within `CLOSE_TIMEOUT_MS`.
   */
  private closeWhenIdle(): void {
    const subscription = this.subscription;
    if (!this.stopRequested || this.running.size > 0 || subscription === null) {
      return;
    }
    if (subscription.established) {
      this.flushAcks();
      subscription.halfClose();
    }
    subscription.cancelAfter(CLOSE_TIMEOUT_MS);
  }
}
