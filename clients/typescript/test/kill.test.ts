/**
 * The feed across a dead target and an instance SIGKILLed and restarted mid-way: every
 * resume reaches the handler exactly once; resumes sent again by an operator are acked
 * without calling the handler.
 */

import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { ResumeFeed, type Client, type RegisterWaitResponse, type Resume } from '../src/index';
import {
  ACK_TIMEOUT_MS,
  RecordingLogger,
  boundedAll,
  eventually,
  freePort,
  redeliverResume,
  seedConfig,
  unackedResumes,
  withFeed,
  withServer,
} from './support';

const EXECUTION = 'exec-kill';

/** Delivers the API response that completes a seed-03 (api only) wait. */
async function deliver(client: Client, wait: RegisterWaitResponse): Promise<void> {
  const response = await client.deliverApiResponse({
    correlationId: wait.correlationId,
    executionId: EXECUTION,
    httpStatus: 200,
    body: '{"done":true}',
    idempotencyKey: `api-${wait.waitId}`,
  });
  // COMPLETED, or DUPLICATE for a retry of a delivery whose answer was lost with the instance.
  assert.ok(
    ['DELIVERY_RESULT_COMPLETED', 'DELIVERY_RESULT_DUPLICATE'].includes(response.result),
    `unexpected ${response.result}`,
  );
}

test('every resume reaches the handler once across a killed instance', { timeout: 80_000 }, (t) =>
  withServer(async (server, client) => {
    const n = 100;
    const waits = await boundedAll(
      Array.from(
        { length: n },
        (_, i) => () =>
          client.registerWait({
            executionId: EXECUTION,
            nodeId: `node-${i}`,
            nodeConfig: seedConfig('03-api-only.json'),
          }),
      ),
    );
    // The held ones' handlers run on, unacked, when the instance dies; the instance is killed
    // while the first are being delivered and handled (acks on the way, handlers finishing
    // with no stream); the rest complete while it comes back.
    const held = waits.slice(0, 10);
    const first = waits.slice(10, 50);
    const rest = waits.slice(50);
    const heldIds = new Set(held.map((wait) => wait.waitId));
    let release = (): void => undefined;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const calls = new Map<string, number>();
    const resumeIds = new Map<string, string>();
    const handler = async (resume: Resume): Promise<void> => {
      calls.set(resume.waitId, (calls.get(resume.waitId) ?? 0) + 1);
      resumeIds.set(resume.waitId, resume.resumeId);
      if (heldIds.has(resume.waitId)) {
        await released;
      }
      await sleep(10 + Math.random() * 50);
    };
    const dead = `127.0.0.1:${await freePort()}`;
    const feed = new ResumeFeed([dead, server.target], handler, {
      backoff: { initialMs: 50, maxMs: 500 },
      logger: new RecordingLogger(),
    });

    await withFeed(feed, async () => {
      try {
        await boundedAll(held.map((wait) => () => deliver(client, wait)));
        await eventually(
          () => held.every((wait) => calls.has(wait.waitId)),
          30_000,
          'the held handlers',
        );
        const deliveringFirst = boundedAll(first.map((wait) => () => deliver(client, wait)));
        await eventually(() => feed.stats.handled >= 15, 30_000, 'some of the first resumes');
        const reconnectsBeforeKill = feed.stats.reconnects;

        await server.kill();
        const deliveringRest = boundedAll(rest.map((wait) => () => deliver(client, wait)));
        await server.start();
        await Promise.all([deliveringFirst, deliveringRest]);

        // The restarted instance sends the held resumes again once their leases ran out; their
        // handlers still run, so the feed ignores them.
        await eventually(() => feed.stats.duplicates >= 1, 30_000, 'a redelivery');
        assert.ok(feed.stats.reconnects > reconnectsBeforeKill, 'the feed subscribed again');
      } finally {
        release();
      }
      await eventually(
        () => calls.size === n && feed.inFlight === 0,
        60_000,
        'every resume handled',
      );
      // Redeliveries of resumes whose acks were lost with the killed instance come by now.
      await sleep(ACK_TIMEOUT_MS + 1000);

      // An operator sends handled resumes again: acked by the feed, the handler not called.
      const duplicatesBefore = feed.stats.duplicates;
      for (const wait of first.slice(0, 3)) {
        const again = await redeliverResume(server.target, wait.waitId);
        assert.equal(again.resumeId, resumeIds.get(wait.waitId));
        assert.equal(again.wasAcked, true);
      }
      await eventually(
        () => feed.stats.duplicates >= duplicatesBefore + 3,
        10_000,
        'the redelivered resumes',
      );
    });

    const notOnce = waits.filter((wait) => calls.get(wait.waitId) !== 1);
    assert.deepEqual(
      notOnce.map((wait) => `${wait.waitId}: ${calls.get(wait.waitId) ?? 0}`),
      [],
      'every wait resumed exactly once',
    );
    assert.equal(calls.size, n);
    assert.equal(feed.stats.handled, n);
    assert.equal(feed.stats.handlerErrors, 0);
    assert.ok(feed.stats.reconnects >= 2, `reconnects: ${feed.stats.reconnects}`);

    const statuses = new Map<string, number>();
    for await (const wait of client.listWaits({ executionId: EXECUTION })) {
      statuses.set(wait.status, (statuses.get(wait.status) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(statuses), { WAIT_STATUS_COMPLETED: n });
    // Every resume acked, the redelivered ones too.
    assert.deepEqual(await unackedResumes(server.target), []);
    t.diagnostic(`feed stats: ${JSON.stringify(feed.stats)}`);
  }),
);
