// Stress under faults, bounded in time: sessions of one model (the default model, a small KV budget) generate,
// fork, rewind, save and load, abort and dispose at random, with bad options and bad input mixed in, all at once
// (so the batch scheduler runs them together); then the server gets clients that disconnect mid-stream, read
// slowly, or send oversize or malformed bodies. Every failure must be a SeedinferError with an expected code (or
// the server's error status), and afterwards the KV pool is back at its baseline and a fresh session gives the
// output of a solo run.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { Model, SeedinferError, createServer, ensureDefaultModel, type Session } from '../src/index.js';
import { rng as random } from './helpers/gguf-writer.js';
import { tempDir } from './helpers/paths.js';

const SECONDS = Number(process.env.SEEDINFER_STRESS_SECONDS ?? 30);
const WORKERS = 6;
const work = tempDir('seedinfer-stress-');
test.after.always(() => fs.rmSync(work, { recursive: true, force: true }));

/** Codes a random operation may legitimately end with. */
const EXPECTED = new Set(['ABORTED', 'KV_BUDGET_EXCEEDED', 'CONTEXT_OVERFLOW', 'INVALID_OPTION', 'INVALID_TOKEN_ID', 'SESSION_BUSY', 'DISPOSED']);

test('sessions generating, forking, rewinding, saving, aborting and disposing at random keep the pool and the output intact', async (t) => {
  const model = await Model.load(await ensureDefaultModel(), { threads: 2, kvCache: { budgetBytes: 10 << 20 } });
  const prompt = 'The quick brown fox';
  const soloSession = model.createSession({ contextSize: 256 });
  const solo = await soloSession.generateText(prompt, { maxTokens: 24, temperature: 0 });
  soloSession.dispose();
  model.clearPrefixCache();
  const baseline = model.cacheStats();
  t.is(baseline.usedBytes, 0);
  const counts: Record<string, number> = {};
  const count = (what: string) => (counts[what] = (counts[what] ?? 0) + 1);
  const deadline = Date.now() + SECONDS * 1000;
  const vocab = model.info.vocabSize;

  async function worker(id: number): Promise<void> {
    const next = random(1000 + id);
    const pick = <T>(items: T[]): T => items[Math.floor(next() * items.length)];
    const tokens = (n: number) => Array.from({ length: n }, () => Math.floor(next() * vocab));
    let session: Session = model.createSession({ contextSize: pick([64, 128, 256]) });
    let saves = 0;
    while (Date.now() < deadline) {
      const op = pick(['generate', 'generate', 'abort', 'fork', 'rewind', 'save', 'dispose', 'bad']);
      count(op);
      try {
        switch (op) {
          case 'generate': {
            const input = next() < 0.5 ? tokens(1 + Math.floor(next() * 40)) : pick(['Once upon a time', 'Hello', '1, 2, 3,']);
            await session.generateText(input, { maxTokens: 1 + Math.floor(next() * 16), temperature: pick([0, 0.7, 1.2]), seed: id });
            break;
          }
          case 'abort': {
            const controller = new AbortController();
            setTimeout(() => controller.abort(), Math.floor(next() * 30));
            await session.generateText(tokens(8), { maxTokens: 32, signal: controller.signal });
            break;
          }
          case 'fork': {
            const fork = session.fork();
            try {
              await fork.generateText(tokens(4), { maxTokens: 4, temperature: 0 });
            } finally {
              fork.dispose();
            }
            break;
          }
          case 'rewind':
            session.rewind(Math.floor(next() * (session.tokenCount + 1)));
            break;
          case 'save': {
            const file = path.join(work, `worker-${id}-${saves++ % 2}.session`);
            await session.save(file);
            session.dispose();
            session = await model.loadSession(file);
            break;
          }
          case 'dispose':
            session.dispose();
            session = model.createSession({ contextSize: pick([64, 128, 256]) });
            break;
          case 'bad': {
            const bad = pick<() => Promise<unknown>>([
              () => session.generateText([vocab + 5], { maxTokens: 2 }),
              () => session.generateText('x', { temperature: -1 }),
              () => session.generateText('x', { maxTokens: 2, responseFormat: 'json' } as never),
              () => session.generateText(tokens(session.contextSize + 1), { maxTokens: 2 }),
              // Two generations at once on one session: the second is SESSION_BUSY; both settle before going on.
              async () => {
                const both = await Promise.allSettled([session.generateText('a', { maxTokens: 4 }), session.generateText('b', { maxTokens: 4 })]);
                const failed = both.find((r) => r.status === 'rejected');
                if (failed) throw (failed as PromiseRejectedResult).reason;
              },
            ]);
            await bad();
            break;
          }
        }
      } catch (error) {
        if (!(error instanceof SeedinferError) || !EXPECTED.has(error.code)) {
          t.fail(`worker ${id}, ${op}: ${error instanceof SeedinferError ? error.code : 'not a SeedinferError'}: ${String(error)}`);
          return;
        }
        count(`error ${error.code}`);
      }
    }
    session.dispose();
  }

  await Promise.all(Array.from({ length: WORKERS }, (_, i) => worker(i)));
  t.log(`${SECONDS} s, ${WORKERS} workers: ${JSON.stringify(counts)}; batched passes ${JSON.stringify(model.batchStats())}`);
  t.true((counts.generate ?? 0) > WORKERS, 'the workers ran');
  model.clearPrefixCache();
  const after = model.cacheStats();
  t.is(after.usedBytes, baseline.usedBytes, 'every block went back to the pool');
  t.is(after.blocksUsed, 0);
  const again = await model.createSession({ contextSize: 256 }).generateText(prompt, { maxTokens: 24, temperature: 0 });
  t.deepEqual(again.tokenIds, solo.tokenIds, 'a fresh session gives the solo run');
  model.dispose();
});

test('the server survives disconnecting, slow and malformed clients, and its pool returns to baseline', async (t) => {
  const model = await Model.load(await ensureDefaultModel(), { threads: 2 });
  const app = createServer(model, { modelId: 'm', contextSize: 256, bodyLimit: 16 * 1024, maxConcurrentSequences: 4, maxQueuedRequests: 8 });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const chat = (extra: object) =>
    JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 48, ...extra });
  const post = (body: string, signal?: AbortSignal) =>
    fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal });
  const statuses: Record<string, number> = {};
  const note = (what: string) => (statuses[what] = (statuses[what] ?? 0) + 1);
  const deadline = Date.now() + (SECONDS / 2) * 1000;

  async function client(id: number): Promise<void> {
    const next = random(2000 + id);
    while (Date.now() < deadline) {
      const kind = ['disconnect', 'slow', 'oversize', 'malformed', 'plain'][Math.floor(next() * 5)];
      try {
        if (kind === 'disconnect') {
          const controller = new AbortController();
          const response = await post(chat({ stream: true }), controller.signal);
          const reader = response.body!.getReader();
          await reader.read();
          controller.abort();
          note(`disconnect ${response.status}`);
        } else if (kind === 'slow') {
          const response = await post(chat({ stream: true, max_tokens: 16 }));
          const reader = response.body!.getReader();
          for (;;) {
            await new Promise((resolve) => setTimeout(resolve, 40));
            const { done } = await reader.read();
            if (done) break;
          }
          note(`slow ${response.status}`);
        } else if (kind === 'oversize') {
          const response = await post(chat({ padding: 'x'.repeat(32 * 1024) }));
          await response.arrayBuffer();
          note(`oversize ${response.status}`);
          t.is(response.status, 413);
        } else if (kind === 'malformed') {
          const response = await post(pickMalformed(next));
          await response.arrayBuffer();
          note(`malformed ${response.status}`);
          t.is(response.status, 400);
        } else {
          const response = await post(chat({ max_tokens: 8 }));
          await response.arrayBuffer();
          note(`plain ${response.status}`);
          t.true(response.status === 200 || response.status === 429, `plain request: ${response.status}`);
        }
      } catch (error) {
        // The client's own abort is the only failure a client may see.
        if ((error as Error).name !== 'AbortError') throw error;
        note(`${kind} aborted`);
      }
    }
  }

  await Promise.all(Array.from({ length: 6 }, (_, i) => client(i)));
  t.log(`server, ${SECONDS / 2} s, 6 clients: ${JSON.stringify(statuses)}`);
  // Every generation has ended (aborted ones included) once the queue drains.
  for (let i = 0; i < 100; i++) {
    const health = (await (await fetch(`${base}/health`)).json()) as { running?: number; queued?: number };
    if (!health.running && !health.queued) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const response = await post(chat({ max_tokens: 4, temperature: 0 }));
  t.is(response.status, 200, 'the server still answers');
  await response.arrayBuffer();
  model.clearPrefixCache();
  t.is(model.cacheStats().usedBytes, 0, 'every block went back to the pool');
  await app.close();
  model.dispose();
});

function pickMalformed(next: () => number): string {
  const cases = ['{', '[]', '{"model": "m"}', '{"model": "m", "messages": "hi"}', '{"model": "m", "messages": [], "max_tokens": -1}', 'null'];
  return cases[Math.floor(next() * cases.length)];
}
