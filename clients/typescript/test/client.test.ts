/**
 * `Client` against the real service: registering, delivering, reading, cancelling, and the
 * errors of the service's error model.
 */

import * as assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResumeFeed,
  Status,
  type Resume,
  type WaitStatus,
} from '../src/index';
import {
  RecordingLogger,
  deliverApi,
  deliverKafka,
  eventually,
  registerBoth,
  seedConfig,
  unackedResumes,
  withFeed,
  withServer,
} from './support';

test(
  'both deliveries complete a seed-01 wait and resume it exactly once',
  { timeout: 30_000 },
  () =>
    withServer(async (server, client) => {
      const resumes: Resume[] = [];
      const feed = new ResumeFeed([server.target], (resume) => void resumes.push(resume), {
        logger: new RecordingLogger(),
      });
      let waitId = '';
      let correlationId = '';
      await withFeed(feed, async () => {
        const wait = await registerBoth(client, 'exec-both');
        ({ waitId, correlationId } = wait);
        assert.equal(wait.created, true);
        assert.equal(wait.status, 'WAIT_STATUS_WAITING_FOR_EVENTS');
        assert.ok(wait.deadline instanceof Date);

        const api = await deliverApi(client, wait, 'exec-both');
        assert.equal(api.result, 'DELIVERY_RESULT_ACCEPTED');
        assert.equal(api.status, 'WAIT_STATUS_WAITING_FOR_KAFKA');

        const kafka = await client.deliverEvent({
          correlationId: wait.correlationId,
          executionId: 'exec-both',
          source: 'kafka',
          payload: '{"event_type":"action.completed"}',
          eventKey: 'kafka-1',
        });
        assert.equal(kafka.result, 'DELIVERY_RESULT_COMPLETED');
        assert.equal(kafka.status, 'WAIT_STATUS_COMPLETED');
        assert.equal(kafka.waitId, wait.waitId);

        await eventually(() => resumes.length === 1, 10_000, 'the resume');
      });
      assert.deepEqual(await unackedResumes(server.target), []);
      assert.equal(resumes.length, 1);
      const [resume] = resumes as [Resume];
      assert.equal(resume.waitId, waitId);
      assert.equal(resume.correlationId, correlationId);
      assert.equal(resume.executionId, 'exec-both');
      assert.equal(resume.outcome, 'OUTCOME_COMPLETED');
      assert.equal(resume.deliveryAttempt, 1);
      assert.ok(resume.decidedAt instanceof Date);
      assert.deepEqual(
        resume.events.map((event) => event.source),
        ['api', 'kafka'],
      );
      const apiEvent = JSON.parse(resume.events[0]?.payloadJson ?? '') as unknown;
      assert.deepEqual(apiEvent, { status: 200, headers: {}, body: { accepted: true } });
      assert.deepEqual(feed.stats, { handled: 1, duplicates: 0, reconnects: 0, handlerErrors: 0 });
    }),
);

test('repeated calls with the same keys are duplicates', { timeout: 30_000 }, () =>
  withServer(async (_server, client) => {
    const first = await registerBoth(client, 'exec-dup', { idempotencyKey: 'loop-1' });
    const again = await registerBoth(client, 'exec-dup', {
      idempotencyKey: 'loop-1',
      // The same config as JSON text.
      nodeConfig: JSON.stringify(seedConfig('01-wait-for-both.json')),
    });
    assert.equal(first.created, true);
    assert.equal(again.created, false);
    assert.equal(again.waitId, first.waitId);
    assert.equal(again.correlationId, first.correlationId);

    assert.equal((await deliverApi(client, first, 'exec-dup')).result, 'DELIVERY_RESULT_ACCEPTED');
    assert.equal((await deliverApi(client, first, 'exec-dup')).result, 'DELIVERY_RESULT_DUPLICATE');
    assert.equal(
      (await deliverKafka(client, first, 'exec-dup')).result,
      'DELIVERY_RESULT_COMPLETED',
    );
    const repeat = await deliverKafka(client, first, 'exec-dup');
    assert.equal(repeat.result, 'DELIVERY_RESULT_DUPLICATE');
    assert.equal(repeat.status, 'WAIT_STATUS_COMPLETED');
  }),
);

test('errors carry the gRPC code and the server message', { timeout: 30_000 }, () =>
  withServer(async (_server, client) => {
    const invalid = {
      type: 'wait_events',
      data: { kafkaEvent: { enabled: true }, aggregationStrategy: 'all' },
    };
    await assert.rejects(
      client.registerWait({ executionId: 'exec-err', nodeId: 'n', nodeConfig: invalid }),
      (error: unknown) => {
        assert.ok(error instanceof InvalidArgumentError);
        assert.equal(error.code, Status.INVALID_ARGUMENT);
        assert.match(error.details, /data\.kafkaEvent\.topic: required when enabled/);
        assert.match(error.message, /^INVALID_ARGUMENT: /);
        return true;
      },
    );
    await assert.rejects(
      client.registerWait({ executionId: 'exec-err', nodeId: 'n', nodeConfig: '{not json' }),
      InvalidArgumentError,
    );

    const wait = await registerBoth(client, 'exec-err', { nodeId: 'n', idempotencyKey: 'k' });
    await assert.rejects(
      registerBoth(client, 'exec-err', {
        nodeId: 'n',
        idempotencyKey: 'k',
        nodeConfig: seedConfig('02-wait-for-any.json'),
      }),
      AlreadyExistsError,
    );
    await assert.rejects(
      client.deliverEvent({
        correlationId: wait.correlationId,
        executionId: 'another-execution',
        source: 'kafka',
        payload: { event_type: 'action.completed' },
        eventKey: 'mismatch-1',
      }),
      FailedPreconditionError,
    );
    await assert.rejects(
      client.getWait({ correlationId: 'no-such-correlation-id' }),
      (error: unknown) => error instanceof NotFoundError && error.code === Status.NOT_FOUND,
    );
  }),
);

test('get, list and cancel waits', { timeout: 30_000 }, () =>
  withServer(async (server, client) => {
    const open0 = await registerBoth(client, 'exec-list', { nodeId: 'node-0' });
    const cancelled = await registerBoth(client, 'exec-list', { nodeId: 'node-1' });
    const open2 = await registerBoth(client, 'exec-list', { nodeId: 'node-2' });
    const waits = [open0, cancelled, open2];
    await registerBoth(client, 'exec-other');
    const ids = (list: { waitId: string }[]): string[] => list.map((w) => w.waitId).sort();

    const listed = [];
    for await (const wait of client.listWaits({ executionId: 'exec-list', pageSize: 2 })) {
      listed.push(wait);
    }
    assert.deepEqual(ids(listed), ids(waits));
    assert.ok(listed.every((w) => w.status === 'WAIT_STATUS_WAITING_FOR_EVENTS'));

    const got = await client.getWait({ correlationId: open0.correlationId });
    assert.equal(got.waitId, open0.waitId);
    assert.deepEqual([...got.waitingFor].sort(), ['api', 'kafka']);
    assert.equal(got.condition, 'api && kafka');
    assert.ok(got.createdAt instanceof Date);
    assert.equal(got.decidedAt, null);

    const resumes: Resume[] = [];
    const feed = new ResumeFeed([server.target], (resume) => void resumes.push(resume), {
      logger: new RecordingLogger(),
    });
    await withFeed(feed, async () => {
      const cancel = await client.cancelWait({
        waitId: cancelled.waitId,
        reason: 'order withdrawn',
      });
      assert.equal(cancel.alreadyDecided, false);
      assert.equal(cancel.wait.status, 'WAIT_STATUS_CANCELLED');
      const again = await client.cancelWait({ correlationId: cancelled.correlationId });
      assert.equal(again.alreadyDecided, true);
      await eventually(() => resumes.length === 1, 10_000, "the cancelled wait's resume");
    });
    assert.equal(resumes[0]?.outcome, 'OUTCOME_CANCELLED');
    assert.equal(resumes[0]?.reason, 'order withdrawn');

    const byStatus = async (statuses: WaitStatus[]): Promise<string[]> => {
      const found = [];
      for await (const wait of client.listWaits({ statuses, pageSize: 1 })) {
        found.push(wait);
      }
      return ids(found);
    };
    assert.deepEqual(await byStatus(['WAIT_STATUS_CANCELLED']), [cancelled.waitId]);
    const open = await byStatus(['WAIT_STATUS_WAITING_FOR_EVENTS']);
    assert.ok(open.includes(open0.waitId) && open.includes(open2.waitId));
    assert.ok(!open.includes(cancelled.waitId));
    const hourAgo = new Date(Date.now() - 3_600_000);
    const older = [];
    for await (const wait of client.listWaits({ createdBefore: hourAgo })) {
      older.push(wait);
    }
    assert.deepEqual(older, []);
  }),
);
