/**
 * Test support: the real service binary as a child process, and helpers shared by the tests.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import * as grpc from '@grpc/grpc-js';

import {
  Client,
  ResumeFeed,
  type DeliveryResponse,
  type FeedLogger,
  type RegisterWaitRequest,
  type RegisterWaitResponse,
  type Resume,
} from '../src/index';
import { rpc } from '../src/proto';

/** The repository root (this file runs as dist/test/support.js). */
export const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const FIXTURES = path.join(REPO, 'crates', 'domain', 'tests', 'fixtures');

/** The server's ack timeout in the tests (short, so redeliveries happen within a test). */
export const ACK_TIMEOUT_MS = 1500;
const SERVER_ENV = {
  RENDEZVOUS__ADMIN__LISTEN: '127.0.0.1:0',
  RENDEZVOUS__KAFKA__ENABLED: 'false',
  RENDEZVOUS__API__ENABLED: 'false',
  RENDEZVOUS__RESUME__ACK_TIMEOUT: `${ACK_TIMEOUT_MS}ms`,
  RENDEZVOUS__RESUME__POLL_INTERVAL: '200ms',
  RENDEZVOUS__SWEEPER__INTERVAL: '50ms',
};
/** How long to wait for the binary to appear (a build may be writing it) and to listen. */
const BINARY_TIMEOUT_MS = 60_000;
const START_TIMEOUT_MS = 30_000;

/** `RENDEZVOUS_BINARY`, else the release build if there is one, else the debug build. */
function binaryPath(): string {
  const configured = process.env['RENDEZVOUS_BINARY'];
  if (configured) {
    return configured;
  }
  const release = path.join(REPO, 'target', 'release', 'rendezvous');
  return existsSync(release) ? release : path.join(REPO, 'target', 'debug', 'rendezvous');
}

/** The service binary, waiting for it to appear; never builds it. */
async function findBinary(): Promise<string> {
  const deadline = Date.now() + BINARY_TIMEOUT_MS;
  for (;;) {
    const binary = binaryPath();
    if (existsSync(binary)) {
      return binary;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `no service binary at ${binary} after ${BINARY_TIMEOUT_MS} ms: ` +
          'build it, or set RENDEZVOUS_BINARY to its path',
      );
    }
    await sleep(500);
  }
}

/** A TCP port on 127.0.0.1 that nothing listens on now. */
export async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', resolve);
  });
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** Whether something accepts connections on the port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * One instance of the service on a fixed port and SQLite file in a temporary directory,
 * which can be killed and started again on both (its output goes to `rendezvous.log` there).
 */
export class RendezvousServer {
  private process: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  private constructor(
    readonly port: number,
    readonly directory: string,
    private readonly settings: Record<string, string>,
  ) {}

  /**
   * A started instance on a free port with an empty database; `settings` are environment
   * variables that override the tests' defaults.
   */
  static async start(settings: Record<string, string> = {}): Promise<RendezvousServer> {
    const directory = mkdtempSync(path.join(tmpdir(), 'rendezvous-ts-'));
    const server = new RendezvousServer(await freePort(), directory, settings);
    await server.start();
    return server;
  }

  /** The gRPC target, `127.0.0.1:<port>`. */
  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Starts the instance and waits until its port accepts connections. */
  async start(): Promise<void> {
    const binary = await findBinary();
    const log = openSync(path.join(this.directory, 'rendezvous.log'), 'a');
    const child = spawn(
      binary,
      ['--database-url', `sqlite://${this.directory}/rv.sqlite?mode=rwc`],
      {
        env: {
          ...process.env,
          ...SERVER_ENV,
          ...this.settings,
          RENDEZVOUS__SERVER__LISTEN: this.target,
        },
        stdio: ['ignore', log, log],
      },
    );
    closeSync(log);
    this.process = child;
    let exitCode: number | string | null = null;
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        exitCode = code ?? signal;
        resolve();
      }),
    );
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!(await accepts(this.port))) {
      if (exitCode !== null) {
        throw new Error(`rendezvous exited with ${exitCode}:\n${this.logTail()}`);
      }
      if (Date.now() > deadline) {
        throw new Error(
          `rendezvous did not listen on ${this.target} within ${START_TIMEOUT_MS} ms:\n` +
            this.logTail(),
        );
      }
      await sleep(50);
    }
  }

  /** SIGKILLs the instance: no graceful shutdown, leases and streams left as they were. */
  async kill(): Promise<void> {
    this.process?.kill('SIGKILL');
    await this.exited;
    this.process = null;
  }

  /** Stops the instance (SIGTERM, SIGKILL after 10 s) and removes its directory. */
  async stop(): Promise<void> {
    if (this.process !== null && this.process.exitCode === null) {
      this.process.kill('SIGTERM');
      const timer = setTimeout(() => this.process?.kill('SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(timer);
    }
    this.process = null;
    rmSync(this.directory, { recursive: true, force: true });
  }

  /** The last lines of the instance's output. */
  logTail(lines = 40): string {
    const log = readFileSync(path.join(this.directory, 'rendezvous.log'), 'utf8');
    return log.split('\n').slice(-lines).join('\n');
  }
}

/** A client whose retries ride over a restart of a few seconds. */
export function patientClient(server: RendezvousServer): Client {
  return new Client(server.target, {
    retry: { attempts: 40, initialBackoffMs: 50, maxBackoffMs: 500 },
  });
}

/** A seed node config from crates/domain/tests/fixtures. */
export function seedConfig(name: string): object {
  return JSON.parse(readFileSync(path.join(FIXTURES, name), 'utf8')) as object;
}

/**
 * Registers a wait of seed config 01 (an `api` response and a `kafka` event) for node
 * `wait-1`, with `overrides` of those arguments.
 */
export function registerBoth(
  client: Client,
  executionId: string,
  overrides: Partial<RegisterWaitRequest> = {},
): Promise<RegisterWaitResponse> {
  return client.registerWait({
    executionId,
    nodeId: 'wait-1',
    nodeConfig: seedConfig('01-wait-for-both.json'),
    inputVariables: { input_data: 'hello' },
    ...overrides,
  });
}

/** Delivers the `api` source's response for a wait. */
export function deliverApi(
  client: Client,
  wait: RegisterWaitResponse,
  executionId: string,
): Promise<DeliveryResponse> {
  return client.deliverApiResponse({
    correlationId: wait.correlationId,
    executionId,
    httpStatus: 200,
    body: { accepted: true },
    idempotencyKey: `api-${wait.waitId}`,
  });
}

/** Delivers the `kafka` source's event (passing seed 01's filter) for a wait. */
export function deliverKafka(
  client: Client,
  wait: RegisterWaitResponse,
  executionId: string,
): Promise<DeliveryResponse> {
  return client.deliverEvent({
    correlationId: wait.correlationId,
    executionId,
    source: 'kafka',
    payload: { event_type: 'action.completed' },
    eventKey: `kafka-${wait.waitId}`,
  });
}

/** Registers a seed-01 wait and delivers both of its events. */
export async function complete(client: Client, executionId: string): Promise<RegisterWaitResponse> {
  const wait = await registerBoth(client, executionId);
  await deliverApi(client, wait, executionId);
  await deliverKafka(client, wait, executionId);
  return wait;
}

/** Waits until `condition()` holds, failing after `timeoutMs`. */
export async function eventually(
  condition: () => boolean,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(20);
  }
}

/** Runs the calls with at most `limit` at once; their results in order. */
export async function boundedAll<T>(calls: (() => Promise<T>)[], limit = 16): Promise<T[]> {
  const results: T[] = new Array<T>(calls.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < calls.length) {
      const index = next++;
      results[index] = await (calls[index] as () => Promise<T>)();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, calls.length) }, worker));
  return results;
}

/** A feed logger that keeps what it is told, for the tests to read instead of the console. */
export class RecordingLogger implements FeedLogger {
  readonly lines: string[] = [];

  info(message: string): void {
    this.lines.push(`info: ${message}`);
  }

  warn(message: string): void {
    this.lines.push(`warn: ${message}`);
  }

  error(message: string): void {
    this.lines.push(`error: ${message}`);
  }
}

/** Runs `feed` while `body` runs, then stops it; rethrows what either threw (`body` first). */
export async function withFeed(feed: ResumeFeed, body: () => Promise<void>): Promise<void> {
  const running = feed.run();
  try {
    await body();
  } catch (error) {
    await feed.stop();
    await running.catch(() => undefined);
    throw error;
  }
  await feed.stop();
  await running;
}

/**
 * Runs `body` with a fresh instance (see `RendezvousServer.start` for `settings`) and a
 * patient client of it; on failure the instance's last log lines go to stderr.
 */
export async function withServer(
  body: (server: RendezvousServer, client: Client) => Promise<void>,
  settings: Record<string, string> = {},
): Promise<void> {
  const server = await RendezvousServer.start(settings);
  const client = patientClient(server);
  try {
    await body(server, client);
  } catch (error) {
    process.stderr.write(`--- rendezvous log (${server.target}) ---\n${server.logTail()}\n`);
    throw error;
  } finally {
    client.close();
    await server.stop();
  }
}

/** AdminService.RedeliverResume: sends a decided wait's resume again. */
export function redeliverResume(
  target: string,
  waitId: string,
): Promise<{ resumeId: string; wasAcked: boolean }> {
  const method = rpc<{ waitId: string }, { resumeId: string; wasAcked: boolean }>(
    'AdminService',
    'RedeliverResume',
  );
  const channel = new grpc.Client(target, grpc.credentials.createInsecure());
  return new Promise<{ resumeId: string; wasAcked: boolean }>((resolve, reject) => {
    channel.makeUnaryRequest(
      method.path,
      method.serialize,
      method.deserialize,
      { waitId },
      (error, response) => (error ? reject(error) : resolve(response!)),
    );
  }).finally(() => channel.close());
}

/**
 * The resumes a fresh subscriber gets within the ack timeout and a margin: those still
 * unacknowledged (leases of closed streams are released, others run out by then).
 */
export async function unackedResumes(target: string): Promise<Resume[]> {
  const received: Resume[] = [];
  const feed = new ResumeFeed([target], (resume) => void received.push(resume), {
    logger: new RecordingLogger(),
  });
  await withFeed(feed, () => sleep(ACK_TIMEOUT_MS + 1000).then(() => undefined));
  return received;
}
