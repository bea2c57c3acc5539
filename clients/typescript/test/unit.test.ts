/** The parts that need no server: the dedupe window, backoff, and the enums' names. */

import * as assert from 'node:assert/strict';
import { test } from 'node:test';

import { Client, DELIVERY_RESULTS, OUTCOMES, ResumeFeed, WAIT_STATUSES } from '../src/index';
import { packageDefinition } from '../src/proto';
import { backoffDelay } from '../src/transport';
import { IdWindow } from '../src/window';

test('the window forgets the oldest id beyond its capacity', () => {
  const window = new IdWindow(2);
  window.add('a');
  window.add('b');
  window.add('a');
  assert.ok(window.has('a') && window.has('b'));
  window.add('c');
  assert.ok(!window.has('b'), 'b is now the oldest');
  assert.ok(window.has('a') && window.has('c'));

  const none = new IdWindow(0);
  none.add('a');
  assert.ok(!none.has('a'));
});

test('backoff doubles up to its cap, jittered into the upper half', () => {
  const samples = (failures: number): number[] =>
    Array.from({ length: 200 }, () => backoffDelay(100, 1000, failures));
  for (const [failures, capped] of [
    [1, 100],
    [2, 200],
    [4, 800],
    [5, 1000],
    [30, 1000],
  ] as const) {
    const delays = samples(failures);
    assert.ok(
      delays.every((delay) => delay >= capped / 2 && delay <= capped),
      `after ${failures} failures: within [${capped / 2}, ${capped}]`,
    );
    assert.ok(new Set(delays).size > 1, 'jittered');
  }
});

/** The names of an enum of `rendezvous.v1` as the loaded contract has them, in order. */
function enumNames(name: string): string[] {
  const definition = packageDefinition[`rendezvous.v1.${name}`];
  assert.equal(definition?.format, 'Protocol Buffer 3 EnumDescriptorProto');
  // An EnumDescriptorProto.
  const descriptor = definition.type as { value: { name: string }[] };
  return descriptor.value.map((value) => value.name);
}

test('the enums list the contract values in order', () => {
  assert.deepEqual([...WAIT_STATUSES], enumNames('WaitStatus'));
  assert.deepEqual([...OUTCOMES], enumNames('Outcome'));
  assert.deepEqual([...DELIVERY_RESULTS], enumNames('DeliveryResult'));
});

test('options out of range are refused', () => {
  const handler = (): void => undefined;
  assert.throws(() => new ResumeFeed([], handler), RangeError);
  assert.throws(() => new ResumeFeed(['127.0.0.1:1'], handler, { maxInFlight: 0 }), RangeError);
  assert.throws(() => new ResumeFeed(['127.0.0.1:1'], handler, { dedupeWindow: -1 }), RangeError);
  assert.throws(
    () => new ResumeFeed(['127.0.0.1:1'], handler, { backoff: { initialMs: 10, maxMs: 5 } }),
    RangeError,
  );
  assert.throws(() => new Client('127.0.0.1:1', { retry: { attempts: 0 } }), RangeError);
  assert.throws(() => new Client('127.0.0.1:1', { timeoutMs: 0 }), RangeError);
});
