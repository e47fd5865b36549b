// The server's admission queue (src/server/admission.ts): oldest first, bounded, KV-budget aware, abortable, and
// closed on shutdown.
import test from 'ava';
import { Admission } from '../src/server/admission.js';
import { SeedinferError } from '../src/index.js';

const code = (error: unknown) => (error as SeedinferError).code;

test('requests run oldest first as room frees; a small later request does not overtake a waiting big one', async (t) => {
  const admission = new Admission(2, 10, 100);
  const order: string[] = [];
  const a = await admission.acquire({ sequences: 1, blocks: 60 });
  const big = admission.acquire({ sequences: 1, blocks: 50 }).then((release) => (order.push('big'), release));
  const small = admission.acquire({ sequences: 1, blocks: 10 }).then((release) => (order.push('small'), release));
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(order, [], 'the big one waits for KV room and the small one waits behind it');
  t.is(admission.queued, 2);
  a();
  const [releaseBig, releaseSmall] = await Promise.all([big, small]);
  t.deepEqual(order, ['big', 'small']);
  t.is(admission.active, 2);
  releaseBig();
  releaseSmall();
  releaseSmall(); // a second release changes nothing
  t.is(admission.active, 0);
});

test('refusals: a full queue, a request that can never fit, an abort while waiting, and shutdown', async (t) => {
  const admission = new Admission(1, 1, 100);
  t.is(code(await t.throwsAsync(admission.acquire({ sequences: 1, blocks: 101 }))), 'KV_BUDGET_EXCEEDED');
  t.is(code(await t.throwsAsync(admission.acquire({ sequences: 2, blocks: 1 }))), 'INVALID_OPTION');
  const release = await admission.acquire({ sequences: 1, blocks: 1 });
  const controller = new AbortController();
  const waiting = admission.acquire({ sequences: 1, blocks: 1 }, controller.signal);
  t.is(code(await t.throwsAsync(admission.acquire({ sequences: 1, blocks: 1 }))), 'QUEUE_FULL');
  controller.abort();
  t.is(code(await t.throwsAsync(waiting)), 'ABORTED');
  t.is(admission.queued, 0);
  const queued = admission.acquire({ sequences: 1, blocks: 1 });
  admission.close();
  t.is(code(await t.throwsAsync(queued)), 'SHUTTING_DOWN');
  t.is(code(await t.throwsAsync(admission.acquire({ sequences: 1, blocks: 1 }))), 'SHUTTING_DOWN');
  release();
  t.is(admission.active, 0);
});
