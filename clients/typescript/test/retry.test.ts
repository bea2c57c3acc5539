/**
 * Which calls `Client` retries, and how: against an in-process gRPC server that fails on
 * purpose (the real service cannot be made to answer UNAVAILABLE or ABORTED on demand).
 */

import * as assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import {
  AbortedError,
  Client,
  InvalidArgumentError,
  ResourceExhaustedError,
  Status,
  UnavailableError,
  type RetryPolicy,
} from '../src/index';
import { serviceDefinition } from '../src/proto';

const FAST: Partial<RetryPolicy> = { attempts: 4, initialBackoffMs: 10, maxBackoffMs: 20 };

/** The codes the fake answers with, one per call, then OK; and what it got. */
const script = {
  failures: [] as Status[],
  calls: 0,
  authorization: [] as grpc.MetadataValue[],
};

/** Counts the call and fails it with the next scripted code, if any. */
function answer<Response>(
  call: grpc.ServerUnaryCall<unknown, Response>,
  callback: grpc.sendUnaryData<Response>,
  response: Response,
): void {
  script.calls++;
  script.authorization = call.metadata.get('authorization');
  const code = script.failures.shift();
  if (code === undefined) {
    callback(null, response);
  } else {
    callback({ code, details: 'scripted failure' });
  }
}

const server = new grpc.Server();
let target = '';

before(async () => {
  server.addService(serviceDefinition('CallbackService'), {
    DeliverEvent: (
      call: grpc.ServerUnaryCall<unknown, object>,
      callback: grpc.sendUnaryData<object>,
    ) => answer(call, callback, { result: 'DELIVERY_RESULT_ACCEPTED', waitId: 'w-1' }),
  });
  server.addService(serviceDefinition('WaitService'), {
    CancelWait: (
      call: grpc.ServerUnaryCall<unknown, object>,
      callback: grpc.sendUnaryData<object>,
    ) => answer(call, callback, { wait: { waitId: 'w-1' } }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  target = `127.0.0.1:${port}`;
});

after(() => server.forceShutdown());

beforeEach(() => {
  script.failures = [];
  script.calls = 0;
  script.authorization = [];
});

/** Runs `body` with a client of the fake, closing it after. */
async function withClient<T>(
  options: ConstructorParameters<typeof Client>[1],
  body: (client: Client) => Promise<T>,
): Promise<T> {
  const client = new Client(target, options);
  try {
    return await body(client);
  } finally {
    client.close();
  }
}

function deliver(client: Client): ReturnType<Client['deliverEvent']> {
  return client.deliverEvent({
    correlationId: 'c-1',
    executionId: 'e-1',
    source: 'kafka',
    payload: '{}',
    eventKey: 'k-1',
  });
}

test('UNAVAILABLE and ABORTED are retried until success, with the token', async () => {
  script.failures = [Status.UNAVAILABLE, Status.ABORTED];
  const response = await withClient({ retry: FAST, token: 'secret-key' }, deliver);
  assert.equal(response.result, 'DELIVERY_RESULT_ACCEPTED');
  assert.equal(response.waitId, 'w-1');
  assert.equal(script.calls, 3);
  assert.deepEqual(script.authorization, ['Bearer secret-key']);
});

test('retries pause longer after each failure', async () => {
  script.failures = [Status.UNAVAILABLE, Status.UNAVAILABLE, Status.UNAVAILABLE];
  const started = Date.now();
  const retry = { attempts: 4, initialBackoffMs: 100, maxBackoffMs: 1000 };
  await withClient({ retry }, deliver);
  const elapsed = Date.now() - started;
  // Pauses of 100, 200 and 400 ms, each jittered into its upper half.
  assert.ok(elapsed >= 350, `the pauses took ${elapsed} ms`);
  assert.equal(script.calls, 4);
});

test('retries stop after the policy attempts', async () => {
  script.failures = Array<Status>(10).fill(Status.UNAVAILABLE);
  await assert.rejects(withClient({ retry: FAST }, deliver), (error: unknown) => {
    assert.ok(error instanceof UnavailableError);
    assert.equal(error.code, Status.UNAVAILABLE);
    assert.equal(error.details, 'scripted failure');
    return true;
  });
  assert.equal(script.calls, FAST.attempts);
  assert.equal(script.authorization.length, 0, 'no token, no authorization metadata');
});

for (const [code, ErrorClass] of [
  [Status.INVALID_ARGUMENT, InvalidArgumentError],
  [Status.RESOURCE_EXHAUSTED, ResourceExhaustedError],
] as const) {
  test(`${Status[code]} is not retried`, async () => {
    script.failures = [code];
    await assert.rejects(withClient({ retry: FAST }, deliver), ErrorClass);
    assert.equal(script.calls, 1);
  });
}

test('CancelWait is not retried', async () => {
  script.failures = [Status.ABORTED];
  await assert.rejects(
    withClient({ retry: FAST }, (client) => client.cancelWait({ waitId: 'w-1' })),
    AbortedError,
  );
  assert.equal(script.calls, 1);
});

test('a key naming both or neither of waitId and correlationId is refused', async () => {
  await withClient({ retry: FAST }, async (client) => {
    const both = { waitId: 'w-1', correlationId: 'c-1' } as unknown as { waitId: string };
    await assert.rejects(client.getWait(both), TypeError);
    await assert.rejects(client.cancelWait({} as { waitId: string }), TypeError);
  });
  assert.equal(script.calls, 0);
});
