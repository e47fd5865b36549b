// ThinK key-channel pruning through the public API (issue 24), on the default model (64-channel heads): ratio 0
// gives the unpruned output, the default prunes the blocks before the recent window (24 of 64 key channels dropped,
// the session's KV bytes shrink by that), a saved session loads with its pruned keys, and bad options and unsupported
// combinations are typed errors.
import test from 'ava';
import path from 'node:path';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import { tempDir } from './helpers/paths.js';
import { greedy } from './helpers/options.js';
import { readmeTokens } from './helpers/prompts.js';

const smol = ensureDefaultModel().then((p) => Model.load(p, { threads: 2, kvCache: { prefixCaching: false } }));

test('ratio 0 gives the unpruned output; the default prunes old keys to 40 of 64 channels', async (t) => {
  const model = await smol;
  const prompt = readmeTokens(model, 300);
  const plainSession = model.createSession({ contextSize: 512 });
  const plain = await plainSession.generateText(prompt, greedy(12));
  const exact = await model.createSession({ contextSize: 512, kvCache: { think: { ratio: 0 } } }).generateText(prompt, greedy(12));
  t.deepEqual(exact.tokenIds, plain.tokenIds);
  t.is(exact.prefill.prunedKeyBlocks, 0);

  const session = model.createSession({ contextSize: 512, kvCache: { think: {} } });
  const pruned = await session.generateText(prompt, greedy(12));
  t.is(pruned.tokenIds.length, 12);
  // The first token comes from the prefill's logits.
  t.is(pruned.tokenIds[0], plain.tokenIds[0]);
  // Blocks of 32 positions wholly before the last 32 prompt tokens.
  t.is(pruned.prefill.prunedKeyBlocks, Math.floor((300 - 32) / 32));
  t.is(pruned.prefill.keptKeyChannels, 40);
  const { layers, kvHeads } = model.info;
  // f16 cache: 24 channels of 2 bytes per key row of every pruned block.
  const saved = pruned.prefill.prunedKeyBlocks * layers * kvHeads * 32 * 24 * 2;
  t.is(session.kvBytes, plainSession.kvBytes - saved);
});

test('bad ThinK options and what ThinK cannot do are typed errors', async (t) => {
  const model = await smol;
  for (const kvCache of [{ think: { ratio: 1 } }, { think: { recent: 0 } }, { think: { lambda: 0.4 } }, { think: 0.4 }, { think: {}, policy: 'streaming', maxTokens: 256 }]) {
    const error = t.throws(() => model.createSession({ kvCache } as never), { instanceOf: SeedinferError });
    t.is(error?.code, 'INVALID_OPTION', JSON.stringify(kvCache));
  }
  const session = model.createSession({ contextSize: 512, kvCache: { think: {} } });
  await t.throwsAsync(session.generateText('Hello there', { maxTokens: 2, prefill: { strategy: 'xattention' } }), {
    instanceOf: SeedinferError,
    code: 'INVALID_OPTION',
    message: /ThinK/,
  });
});

test('a saved ThinK session loads with its pruned keys and continues as the session does', async (t) => {
  const model = await smol;
  const session = model.createSession({ contextSize: 512, kvCache: { think: {} } });
  const first = await session.generateText(readmeTokens(model, 200), greedy(4));
  t.true(first.prefill.prunedKeyBlocks > 0);
  const file = path.join(tempDir('think'), 'session.bin');
  await session.save(file);
  const loaded = await model.loadSession(file);
  t.is(loaded.kvBytes, session.kvBytes);
  const next = (readmeTokens(model, 300)).slice(200);
  const [a, b] = [await loaded.generateText(next, greedy(12)), await session.generateText(next, greedy(12))];
  t.deepEqual(a.tokenIds, b.tokenIds);
  t.is(a.prefill.prunedKeyBlocks, b.prefill.prunedKeyBlocks);
});
