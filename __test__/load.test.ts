// A bounded load test of the server on loopback (bench/load.ts): 32 concurrent clients, 200 requests mixing
// streamed and plain chat and text completions (some with n = 2), against a server that admits 8 sequences and
// queues 16 requests, so some requests are refused with 429 and retried. Nothing else may fail, and afterwards no
// session, queued request or KV block is left. Speed is reported, not asserted (README: Load test).
import test from 'ava';
import { Model, ensureDefaultModel } from '../src/index.js';
import { runLoad } from '../bench/load.js';

test('32 clients, 200 mixed requests: only deliberate 429s, nothing leaked', async (t) => {
  t.timeout(180_000);
  const model = await Model.load(await ensureDefaultModel(), { threads: 2 });
  const report = await runLoad(model, { clients: 32, requests: 200, maxTokens: 12, parallel: 8, maxQueue: 16 });
  t.log(
    `${report.completed} requests in ${report.seconds.toFixed(1)} s, ${report.tokensPerSecond.toFixed(0)} generated tok/s, ` +
      `TTFT p50 ${report.ttftMs.p50.toFixed(0)} ms p99 ${report.ttftMs.p99.toFixed(0)} ms, ${report.rateLimited} × 429`,
  );
  t.deepEqual(report.failures, []);
  t.is(report.completed, 200);
  t.true(report.rateLimited > 0, 'a full queue pushed back');
  t.true(report.generatedTokens > 200);
  t.is(report.leakedBlocks, 0);
  t.is(report.running, 0);
  t.is(report.queued, 0);
});
