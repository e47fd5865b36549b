// The KV-cache manager through the public API (issue 5), on stories260K: prefix reuse, fork, rewind, save/load,
// dispose, the byte budget, typed errors; and on the default model (SmolLM2) the int8 cache's agreement with f32.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import type { GenerateOptions } from '../index.js';
import { repoRoot, storiesDir, storiesExpected, tempDir } from './helpers/paths.js';
import { greedy } from './helpers/options.js';

const f32Model = Model.load(storiesDir, { threads: 2, kvCache: { dtype: 'f32', blockSize: 16 } });

/** A 150-token prompt: BOS and the start of the model's own greedy story. */
function longPrompt(): number[] {
  return [1, ...storiesExpected().greedy_token_ids.slice(0, 149)];
}

test('a second session with the same prompt reuses the cached prefix and generates the same tokens', async (t) => {
  const model = await Model.load(storiesDir, { threads: 2, kvCache: { dtype: 'f32', blockSize: 16 } });
  const prompt = longPrompt();
  const first = model.createSession();
  const a = await first.generateText(prompt, greedy(30));
  t.is(a.timings.reusedPromptTokens, 0);
  const second = model.createSession();
  const b = await second.generateText(prompt, greedy(30));
  t.deepEqual(b.tokenIds, a.tokenIds);
  // Whole blocks only, and the last prompt token is always computed (it yields the logits).
  t.is(b.timings.reusedPromptTokens, 144);
  const stats = model.cacheStats();
  t.is(stats.prefixHitTokens, 144);
  t.true(stats.blocksShared >= 9, JSON.stringify(stats));
  // Without prefix caching the same prompt is computed in full, to the same tokens.
  const plain = await Model.load(storiesDir, { threads: 2, kvCache: { dtype: 'f32', blockSize: 16, prefixCaching: false } });
  const c = await plain.createSession().generateText(prompt, greedy(30));
  t.deepEqual(c.tokenIds, a.tokenIds);
  t.is(c.timings.reusedPromptTokens, 0);
});

test('forks share blocks and continue exactly as fresh sessions given the whole history', async (t) => {
  const model = await f32Model;
  const parent = model.createSession();
  await parent.generateText(longPrompt().slice(0, 45), greedy(10));
  const child = parent.fork();
  t.deepEqual(child.tokenIds, parent.tokenIds);
  t.is(child.kvBytes, parent.kvBytes);
  const history = parent.tokenIds;
  const [x, y] = [[300, 301, 302], [400, 401]];
  const fromParent = await parent.generateText(x, greedy(20));
  const fromChild = await child.generateText(y, greedy(20));
  const freshX = await model.createSession().generateText([...history, ...x], greedy(20));
  const freshY = await model.createSession().generateText([...history, ...y], greedy(20));
  t.deepEqual(fromParent.tokenIds, freshX.tokenIds);
  t.deepEqual(fromChild.tokenIds, freshY.tokenIds);
});

test('rewind then regenerate equals never having generated', async (t) => {
  const model = await f32Model;
  const session = model.createSession();
  const first = await session.generateText(longPrompt().slice(0, 40), greedy(40));
  t.is(session.tokenCount, 80);
  session.rewind(40);
  t.is(session.tokenCount, 40);
  const again = await session.generateText([], greedy(40));
  t.deepEqual(again.tokenIds, first.tokenIds);
  // Into the middle of a block and of the prompt.
  session.rewind(53);
  t.deepEqual(session.tokenIds, longPrompt().slice(0, 27));
  const fresh = await model.createSession().generateText(longPrompt().slice(0, 27), greedy(20));
  t.deepEqual((await session.generateText([], greedy(20))).tokenIds, fresh.tokenIds);
  t.throws(() => session.rewind(1000), { instanceOf: SeedinferError, code: 'INVALID_OPTION' });
  session.rewind(session.tokenCount);
  t.is(session.tokenCount, 0);
});

for (const dtype of ['f32', 'f16', 'int8'] as const) {
  test(`save -> loadSession -> continue equals continuing (${dtype} KV)`, async (t) => {
    const model = await Model.load(storiesDir, { threads: 2, kvCache: { dtype } });
    const session = model.createSession();
    await session.generateText([1], greedy(50));
    const file = path.join(tempDir(), `story-${dtype}.session`);
    await session.save(file);
    const restored = await model.loadSession(file);
    t.deepEqual(restored.tokenIds, session.tokenIds);
    const continued = await session.generateText([], greedy(50));
    const resumed = await restored.generateText([], greedy(50));
    t.deepEqual(resumed.tokenIds, continued.tokenIds);
    if (dtype === 'f32') t.deepEqual([...session.tokenIds.slice(1)], storiesExpected().greedy_token_ids.slice(0, 100));
  });
}

test('a damaged or foreign session file is a typed error', async (t) => {
  const model = await f32Model;
  const session = model.createSession();
  await session.generateText([1], greedy(20));
  const dir = tempDir();
  const file = path.join(dir, 'good.session');
  await session.save(file);
  const bytes = fs.readFileSync(file);
  const flipped = Buffer.from(bytes);
  flipped[Math.floor(bytes.length / 2)] ^= 0x40;
  const cases: [string, Buffer][] = [
    ['flipped', flipped],
    ['truncated', bytes.subarray(0, bytes.length - 100)],
    ['magic', Buffer.concat([Buffer.from('NOTASESS'), bytes.subarray(8)])],
    ['empty', Buffer.alloc(0)],
  ];
  for (const [name, content] of cases) {
    const bad = path.join(dir, `${name}.session`);
    fs.writeFileSync(bad, content);
    await t.throwsAsync(model.loadSession(bad), { instanceOf: SeedinferError, code: 'SESSION_FILE_INVALID' }, name);
  }
  await t.throwsAsync(model.loadSession(path.join(dir, 'missing.session')), { code: 'SESSION_FILE_INVALID' });
  const otherDtype = await Model.load(storiesDir, { threads: 1, kvCache: { dtype: 'f16', blockSize: 16 } });
  await t.throwsAsync(otherDtype.loadSession(file), { code: 'SESSION_FILE_MISMATCH', message: /KV dtype/ });
  const otherWeights = await Model.load(storiesDir, { threads: 1, weights: 'f16', kvCache: { dtype: 'f32', blockSize: 16 } });
  await t.throwsAsync(otherWeights.loadSession(file), { code: 'SESSION_FILE_MISMATCH', message: /different model/ });
});

test('the byte budget: KV_BUDGET_EXCEEDED with needed and available bytes, dispose frees at once, cached blocks are evicted', async (t) => {
  const probe = await f32Model;
  const blockBytes = probe.cacheStats().blockBytes;
  const model = await Model.load(storiesDir, { threads: 1, kvCache: { dtype: 'f32', blockSize: 16, budgetBytes: 6 * blockBytes } });
  const holder = model.createSession();
  await holder.generateText(longPrompt().slice(0, 60), greedy(4)); // 4 blocks
  t.is(model.cacheStats().blocksUsed, 4);
  const other = model.createSession();
  const error = await t.throwsAsync(other.generateText(longPrompt().slice(60, 110), greedy(4)), {
    instanceOf: SeedinferError,
    code: 'KV_BUDGET_EXCEEDED',
  });
  t.regex(error?.message ?? '', new RegExp(`needs ${4 * blockBytes} more bytes but only ${2 * blockBytes} of its ${6 * blockBytes}-byte budget`));
  t.is(other.tokenCount, 0);
  // The session survives and a prompt that fits still runs.
  t.is((await other.generateText([1, 2, 3], greedy(2))).tokenIds.length, 2);
  other.dispose();
  holder.dispose();
  t.throws(() => holder.tokenCount, { code: 'DISPOSED' });
  // Disposed sessions return their blocks at once; the full ones stay as reusable cache.
  const afterDispose = model.cacheStats();
  t.is(afterDispose.blocksUsed, afterDispose.blocksCached);
  const third = model.createSession();
  await third.generateText(longPrompt().slice(70, 150), greedy(4)); // 6 blocks: evicts the cached ones
  t.true(model.cacheStats().evictedBlocks > 0);
  third.dispose();
  model.clearPrefixCache();
  t.is(model.cacheStats().usedBytes, 0);
});

test('invalid kvCache options are typed errors', async (t) => {
  for (const kvCache of [{ dtype: 'q4' }, { blockSize: 12 }, { blockSize: 4 }, { budgetBytes: -1 }, { budgetBytes: 1000 }]) {
    await t.throwsAsync(Model.load(storiesDir, { kvCache: kvCache as never }), { instanceOf: SeedinferError, code: 'INVALID_OPTION' }, JSON.stringify(kvCache));
  }
});

// KV precision against f32 KV, teacher-forced, on SmolLM2. With the file's Q4_1 weights activations are rounded to
// int8 per 32 values, and any change in the last bits flips ~4-5% of these passages' near-ties (f16 KV included:
// that is the floor, see README "Correctness"), so int8 KV is held to f16's level there. With the weights expanded
// to f32 that noise is gone and the KV dtype's own effect shows: f16 must agree on >= 99.5%, int8 on >= 99% of the
// 875-token passage (and >= 98% of the 468-token one).
test('SmolLM2: int8 and f16 KV agree with f32 KV on teacher-forced next tokens', async (t) => {
  const file = await ensureDefaultModel();
  const reference = JSON.parse(fs.readFileSync(path.join(repoRoot, '__test__', 'fixtures', 'llamacpp-smollm2.json'), 'utf8'));
  for (const passage of ['teacherForced', 'teacherForcedProse'] as const) {
    const tokens: number[] = reference[passage].tokens;
    t.true(tokens.length >= 256);
    for (const weights of [undefined, 'f32'] as const) {
      const predictions: Record<string, number[]> = {};
      for (const dtype of ['f32', 'f16', 'int8'] as const) {
        const model = await Model.load(file, { weights, kvCache: { dtype } });
        predictions[dtype] = await model.createSession({ contextSize: 1024 }).predictNextTokens(tokens);
      }
      const agreement = (dtype: string) => predictions[dtype].filter((id, i) => id === predictions.f32[i]).length / tokens.length;
      const [f16, int8] = [agreement('f16'), agreement('int8')];
      const label = `${passage} (${tokens.length} tokens), weights ${weights ?? 'Q4_1 (file)'}`;
      t.log(`${label}: agreement with f32 KV: f16 ${(100 * f16).toFixed(1)}%, int8 ${(100 * int8).toFixed(1)}%`);
      if (weights === 'f32') {
        t.true(f16 >= 0.995, `${label}: f16 ${f16}`);
        t.true(int8 >= (passage === 'teacherForcedProse' ? 0.99 : 0.98), `${label}: int8 ${int8}`);
      } else {
        t.true(int8 >= f16 - 0.015 && f16 >= 0.94, `${label}: f16 ${f16}, int8 ${int8}`);
      }
    }
  }
});

test('predictNextTokens, save and loadSession take an AbortSignal: an aborted one rejects with ABORTED and changes nothing', async (t) => {
  const model = await f32Model;
  const session = model.createSession();
  await session.generateText([1], greedy(5));
  const file = path.join(tempDir(), `abort-${process.pid}.session`);
  const code = async (p: Promise<unknown>) => ((await t.throwsAsync(p)) as SeedinferError).code;
  t.is(await code(session.predictNextTokens([5, 6, 7], { signal: AbortSignal.abort() })), 'ABORTED');
  t.is(session.tokenCount, 6);
  t.is(await code(session.save(file, { signal: AbortSignal.abort() })), 'ABORTED');
  t.false(fs.existsSync(file));
  t.is(await code(session.predictNextTokens([5], { signal: 'stop' as unknown as AbortSignal })), 'INVALID_OPTION');
  // A live signal that never fires changes nothing.
  const live = new AbortController();
  const predicted = await session.predictNextTokens([5, 6], { signal: live.signal });
  t.is(predicted.length, 2);
  await session.save(file, { signal: live.signal });
  t.is(await code(model.loadSession(file, { signal: AbortSignal.abort() })), 'ABORTED');
  const loaded = await model.loadSession(file, { signal: live.signal });
  t.is(loaded.tokenCount, session.tokenCount);
  fs.rmSync(file, { force: true });
});
