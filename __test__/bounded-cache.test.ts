// Bounded KV caches through the public API (issue 24: StreamingLLM and SirLLM): a bound the history fits in gives
// the unbounded output, a generation longer than the context runs with flat KV memory, scoreTokens agrees with
// model.perplexity, and bad bounds and unsupported combinations are typed errors.
import test from 'ava';
import path from 'node:path';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import type { GenerateOptions, SessionOptions } from '../index.js';
import { tempDir } from './helpers/paths.js';
import { greedy } from './helpers/options.js';
import { readmeTokens } from './helpers/prompts.js';

const smol = ensureDefaultModel().then((p) => Model.load(p, { threads: 2, kvCache: { prefixCaching: false } }));

test('a bound the history fits in gives the unbounded output', async (t) => {
  const model = await smol;
  const prompt = readmeTokens(model, 200);
  const plain = await model.createSession({ contextSize: 512 }).generateText(prompt, greedy(40));
  for (const kvCache of [{ policy: 'streaming', maxTokens: 512 }, { policy: 'sirllm', maxTokens: 512 }] as const) {
    const session = model.createSession({ contextSize: 512, kvCache });
    const out = await session.generateText(prompt, greedy(40));
    t.deepEqual(out.tokenIds, plain.tokenIds, kvCache.policy);
    t.is(session.evictedTokens, 0);
  }
});

test('a bounded session generates past its context with flat KV memory', async (t) => {
  const model = await smol;
  const session = model.createSession({ contextSize: 512, kvCache: { policy: 'streaming', maxTokens: 256 } });
  const prompt = readmeTokens(model, 600);
  const first = await session.generateText(prompt, greedy(8));
  t.is(first.tokenIds.length, 8);
  const held = session.kvBytes;
  const more = await session.generateText('', greedy(300));
  t.is(more.tokenIds.length, 300);
  t.is(more.stopReason, 'maxTokens');
  t.true(session.tokenCount <= 256);
  t.true(session.kvBytes <= held, `${session.kvBytes} > ${held}`);
  t.true(session.evictedTokens >= 600 + 308 - 256);
});

test('scoreTokens gives the negative log-likelihoods model.perplexity sums', async (t) => {
  const model = await smol;
  const tokens = readmeTokens(model, 300);
  const nll = await model.createSession().scoreTokens(tokens);
  t.is(nll.length, 300);
  t.true(Number.isNaN(nll[0]));
  const sum = nll.slice(1).reduce((a, b) => a + b, 0);
  const reference = await model.perplexity(tokens, { window: 300 });
  t.true(Math.abs(sum - reference.nll) < 1e-6 * reference.nll, `${sum} vs ${reference.nll}`);
});

test('bad bounds and what a bounded cache cannot do are INVALID_OPTION', async (t) => {
  const model = await smol;
  const bad: [unknown, RegExp][] = [
    [{ policy: 'lru', maxTokens: 256 }, /policy/],
    [{ policy: 'streaming' }, /maxTokens/],
    [{ policy: 'streaming', maxTokens: 4096 }, /maxTokens/],
    [{ policy: 'streaming', maxTokens: 256, recent: 8 }, /recent/],
    [{ policy: 'sirllm', maxTokens: 256, decay: 2 }, /decay/],
    [{ policy: 'sirllm', maxTokens: 256, recnt: 8 }, /recent/],
  ];
  for (const [kvCache, message] of bad) {
    const error = t.throws(() => model.createSession({ contextSize: 512, kvCache } as SessionOptions), { instanceOf: SeedinferError });
    t.is(error?.code, 'INVALID_OPTION', JSON.stringify(kvCache));
    t.regex(error?.message ?? '', message, JSON.stringify(kvCache));
  }
  const session = model.createSession({ contextSize: 512, kvCache: { policy: 'streaming', maxTokens: 256 } });
  for (const options of [{ prefill: { strategy: 'lazyllm' } }, { speculative: {} }] as GenerateOptions[]) {
    const error = await t.throwsAsync(session.generateText('Hello', { ...greedy(2), ...options }), { instanceOf: SeedinferError });
    t.is(error?.code, 'INVALID_OPTION');
  }
});

test('a saved bounded session loads and continues as the session does', async (t) => {
  const model = await smol;
  const session = model.createSession({ contextSize: 512, kvCache: { policy: 'sirllm', maxTokens: 128, recent: 32 } });
  await session.generateText(readmeTokens(model, 200), greedy(16));
  t.true(session.evictedTokens > 0);
  const file = path.join(tempDir('bounded'), 'chat.session');
  await session.save(file);
  const loaded = await model.loadSession(file);
  t.is(loaded.evictedTokens, session.evictedTokens);
  t.is(loaded.kvBytes, session.kvBytes);
  const [a, b] = [await loaded.generateText('', greedy(40)), await session.generateText('', greedy(40))];
  t.deepEqual(a.tokenIds, b.tokenIds);
  t.is(loaded.evictedTokens, session.evictedTokens);
});
