/**
 * `ResumeFeed` against the real service: acks after the handler, redelivery of a failed
 * handler's resume, backpressure, graceful stop, fatal refusals.
 */

import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  InvalidArgumentError,
  ResumeFeed,
  type RegisterWaitResponse,
  type Resume,
} from '../src/index';
import {
  ACK_TIMEOUT_MS,
  RecordingLogger,
  complete,
  eventually,
  unackedResumes,
  withFeed,
  withServer,
} from './support';

/** A promise and the function that resolves it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

test('a handler that throws gets its resume again', { timeout: 30_000 }, () =>
  withServer(async (server, client) => {
    const attempts: number[] = [];
    const logger = new RecordingLogger();
    const feed = new ResumeFeed(
      [server.target],
      async (resume) => {
        attempts.push(resume.deliveryAttempt);
        if (attempts.length === 1) {
          throw new Error('the engine is not ready yet');
        }
      },
      { logger },
    );
    await withFeed(feed, async () => {
      await complete(client, 'exec-throw');
      await eventually(() => feed.stats.handled === 1, 10_000, 'the redelivered resume');
      // Long enough for a third delivery, had the second not been acked.
      await sleep(ACK_TIMEOUT_MS + 1000);
    });
    assert.deepEqual(attempts, [1, 2]);
    assert.equal(feed.stats.handled, 1);
    assert.equal(feed.stats.handlerErrors, 1);
    assert.ok(logger.lines.some((line) => line.startsWith('error: resume handler failed')));
  }),
);

test('maxInFlight bounds the running handlers, across a reconnect', { timeout: 30_000 }, () =>
  withServer(async (server, client) => {
    const { opened, open } = gate();
    const calls = new Map<string, number>();
    let running = 0;
    let most = 0;
    const feed = new ResumeFeed(
      [server.target],
      async (resume) => {
        calls.set(resume.waitId, (calls.get(resume.waitId) ?? 0) + 1);
        running++;
        most = Math.max(most, running);
        await opened;
        running--;
      },
      { maxInFlight: 2, backoff: { initialMs: 50, maxMs: 200 }, logger: new RecordingLogger() },
    );
    const waits: RegisterWaitResponse[] = [];
    await withFeed(feed, async () => {
      try {
        for (let i = 0; i < 5; i++) {
          waits.push(await complete(client, `exec-bp-${i}`));
        }
        await eventually(() => feed.inFlight === 2, 10_000, 'two running handlers');
        // A new stream gets resumes the old one never had, and after the ack timeout those
        // whose handlers run: still only two run.
        await server.kill();
        await server.start();
        await eventually(() => feed.stats.reconnects >= 1, 10_000, 'a new stream');
        await sleep(ACK_TIMEOUT_MS + 1000);
        assert.equal(feed.inFlight, 2);
        assert.equal(feed.stats.handled, 0);
      } finally {
        open();
      }
      await eventually(() => feed.stats.handled === 5, 10_000, 'every resume');
    });
    assert.equal(most, 2);
    assert.equal(feed.inFlight, 0);
    assert.deepEqual(
      waits.map((wait) => calls.get(wait.waitId)),
      [1, 1, 1, 1, 1],
    );
    assert.deepEqual(await unackedResumes(server.target), []);
  }),
);

test(
  'acks of handlers that finish while disconnected are sent on the next stream',
  {
    timeout: 30_000,
  },
  () => {
    // Leases long enough for the feed to be back before they run out.
    const ackTimeoutMs = 3000;
    return withServer(
      async (server, client) => {
        const { opened, open } = gate();
        const calls = new Map<string, number>();
        const logger = new RecordingLogger();
        // Nothing remembered: a redelivery would reach the handler again.
        const feed = new ResumeFeed(
          [server.target],
          async (resume) => {
            calls.set(resume.waitId, (calls.get(resume.waitId) ?? 0) + 1);
            await opened;
          },
          { dedupeWindow: 0, backoff: { initialMs: 50, maxMs: 200 }, logger },
        );
        const waits: RegisterWaitResponse[] = [];
        await withFeed(feed, async () => {
          try {
            for (let i = 0; i < 3; i++) {
              waits.push(await complete(client, `exec-offline-${i}`));
            }
            await eventually(() => feed.inFlight === 3, 10_000, 'the running handlers');
            await server.kill();
            await eventually(() => feed.stats.reconnects >= 1, 10_000, 'the lost stream');
          } finally {
            open();
          }
          // The handlers finish with no stream to ack on.
          await eventually(() => feed.stats.handled === 3, 10_000, 'the handlers');
          await server.start();
          const subscribed = (): number =>
            logger.lines.filter((line) => line.startsWith('info: resume stream subscribed')).length;
          await eventually(() => subscribed() === 2, 10_000, 'the next stream');
          // Past the leases: had the acks not gone out, the resumes would have come again.
          await sleep(ackTimeoutMs + 1000);
        });
        assert.deepEqual(
          waits.map((wait) => calls.get(wait.waitId)),
          [1, 1, 1],
        );
        assert.equal(feed.stats.duplicates, 0);
      },
      { RENDEZVOUS__RESUME__ACK_TIMEOUT: `${ackTimeoutMs}ms` },
    );
  },
);

test('stop lets running handlers finish and acks them', { timeout: 30_000 }, () =>
  withServer(async (server, client) => {
    const started = gate();
    const release = gate();
    const finished: string[] = [];
    const feed = new ResumeFeed(
      [server.target],
      async (resume: Resume) => {
        started.open();
        await release.opened;
        finished.push(resume.waitId);
      },
      { logger: new RecordingLogger() },
    );
    const running = feed.run();
    let stopped = false;
    const wait = await complete(client, 'exec-stop');
    await started.opened;
    const stopping = feed.stop().then(() => {
      stopped = true;
    });
    await sleep(200);
    assert.equal(stopped, false, 'stop() waits for the running handler');
    assert.equal(feed.inFlight, 1);
    release.open();
    await stopping;
    await running;
    assert.deepEqual(finished, [wait.waitId]);
    assert.equal(feed.stats.handled, 1);
    // The ack went out before the stream closed: nothing is left for another subscriber.
    assert.deepEqual(await unackedResumes(server.target), []);
  }),
);

test('a refused subscription rejects run() with the error', { timeout: 30_000 }, () =>
  withServer(async (server) => {
    const feed = new ResumeFeed(
      [server.target],
      () => {
        throw new Error('no resume expected');
      },
      { tenantId: ' padded tenant ', logger: new RecordingLogger() },
    );
    await assert.rejects(feed.run(), (error: unknown) => {
      assert.ok(error instanceof InvalidArgumentError);
      assert.match(error.details, /subscribe\.tenant_id/);
      return true;
    });
    assert.equal(feed.stats.reconnects, 0);
    // Stopping a feed that already ended resolves at once.
    await feed.stop();
  }),
);
