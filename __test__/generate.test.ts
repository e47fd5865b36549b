// The public API on a real float32 checkpoint (stories260K): exact greedy output, streaming, sampling,
// abort, concurrency and an event loop that stays responsive.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, SeedinferError } from '../src/index.js';
import type { GeneratedToken } from '../index.js';
import { storiesDir, storiesExpected, tempDir } from './helpers/paths.js';

const modelPromise = Model.load(storiesDir, { threads: 2 });

test('tokenizer encodes "Once upon a time" like llama2.c and round-trips', async (t) => {
  const model = await modelPromise;
  const ids = model.tokenize('Once upon a time');
  t.deepEqual(ids, [1, 403, 407, 261, 378]);
  t.is(model.detokenize(ids, { skipSpecial: true }), 'Once upon a time');
  for (const text of ['Lily and Tom went to the park.', 'naïve café 😀 – “quotes”', '  spaced   out\nlines']) {
    t.is(model.detokenize(model.tokenize(text, { addBos: false })), text);
  }
});

test('greedy from [1] reproduces expected_greedy.json (200 tokens) and streams the same text', async (t) => {
  const model = await modelPromise;
  const expected = storiesExpected();
  const session = model.createSession();
  const generation = session.generate(expected.prompt_token_ids, { maxTokens: 200, temperature: 0, ignoreEos: true });
  let streamed = '';
  for await (const chunk of generation) streamed += chunk;
  const result = await generation.result;
  t.deepEqual(result.tokenIds, expected.greedy_token_ids);
  t.deepEqual(result.promptTokenIds, [1]);
  t.is(result.stopReason, 'maxTokens');
  t.is(streamed, result.text);
  t.true(result.text.startsWith('Once upon a time, there was a little girl named Lily.'));
  t.true(result.timings.ttftMs > 0 && result.timings.decodeTokensPerSecond > 0 && result.timings.prefillTokensPerSecond > 0);
  t.is(session.tokenCount, 201);
});

test('ignoreEos: generation runs 200 tokens past an end-of-generation token', async (t) => {
  // stories260K never picks its own EOS greedily from [1], so a copy of the checkpoint declares the 10th greedy
  // token an end-of-generation id as well (generation_config.json eos_token_id).
  const expected = storiesExpected().greedy_token_ids;
  const eog = expected[9];
  const dir = tempDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.cpSync(storiesDir, dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, eog] }));
  const model = await Model.load(dir, { threads: 2 });
  const stopped = await model.createSession().generateText([1], { maxTokens: 200, temperature: 0 });
  t.is(stopped.stopReason, 'eos');
  t.deepEqual(stopped.tokenIds, expected.slice(0, expected.indexOf(eog) + 1));
  const result = await model.createSession().generateText([1], { maxTokens: 200, temperature: 0, ignoreEos: true });
  t.is(result.stopReason, 'maxTokens');
  t.deepEqual(result.tokenIds, expected);
  t.true(result.tokenIds.filter((id) => id === eog).length > 1);
  model.dispose();
});

test('a seed reproduces a sample; different seeds differ', async (t) => {
  const model = await modelPromise;
  const sample = (seed: number) =>
    model.createSession().generateText('Once upon a time', { maxTokens: 40, temperature: 1, topK: 0, topP: 1, minP: 0, seed, ignoreEos: true });
  const [a, b, c] = await Promise.all([sample(42), sample(42), sample(7)]);
  t.deepEqual(a.tokenIds, b.tokenIds);
  t.notDeepEqual(a.tokenIds, c.tokenIds);
});

test('stop strings end the text before them', async (t) => {
  const model = await modelPromise;
  const result = await model.createSession().generateText([1], { temperature: 0, stop: ['Lily'], maxTokens: 100 });
  t.is(result.stopReason, 'stop');
  t.is(result.text, 'Once upon a time, there was a little girl named ');
});

test('concurrent sessions generate exactly what they generate alone', async (t) => {
  const model = await modelPromise;
  const expected = storiesExpected().greedy_token_ids;
  const runs = await Promise.all(
    [0, 1, 2].map(() => model.createSession().generateText([1], { maxTokens: 120, temperature: 0, ignoreEos: true })),
  );
  for (const run of runs) t.deepEqual(run.tokenIds, expected.slice(0, 120));
});

test('concurrent generations with different prompts and sampling batch their decode steps and match their runs alone', async (t) => {
  // Concurrent sessions of one model share forward passes (crates/seedinfer-engine/src/batcher.rs); each must get
  // exactly its own tokens.
  const model = await modelPromise;
  const requests = [0, 1, 2, 3, 4, 5].map((i) => ({
    prompt: [1, ...Array.from({ length: 2 + 4 * i }, (_, k) => 20 + ((k * 31 + i * 7) % 400))],
    options: { maxTokens: 30 + 10 * i, temperature: i % 2 === 0 ? 0 : 0.9, seed: 100 + i, ignoreEos: true },
  }));
  const alone: number[][] = [];
  for (const r of requests) alone.push((await model.createSession().generateText(r.prompt, r.options)).tokenIds);
  const together = await Promise.all(requests.map((r) => model.createSession().generateText(r.prompt, r.options)));
  together.forEach((run, i) => t.deepEqual(run.tokenIds, alone[i], `request ${i}`));
});

test('logprobs: onToken streams each token with its log-probability; greedy picks the top one; the result holds them all', async (t) => {
  const model = await modelPromise;
  const seen: GeneratedToken[] = [];
  const result = await model
    .createSession()
    .generateText([1], { maxTokens: 12, temperature: 0, ignoreEos: true, logprobs: true, topLogprobs: 4, onToken: (tok) => seen.push(tok) });
  t.is(result.logprobs?.length, 12);
  t.deepEqual(seen.map((s) => s.tokenId), result.tokenIds);
  t.deepEqual(seen.map((s) => s.logprobs), result.logprobs);
  t.is(seen.map((s) => s.text).join(''), result.text);
  for (const [i, l] of (result.logprobs ?? []).entries()) {
    t.is(l.tokenId, result.tokenIds[i]);
    t.is(l.token, model.detokenize([l.tokenId]));
    t.is(l.topLogprobs.length, 4);
    t.deepEqual(l.topLogprobs[0], { tokenId: l.tokenId, token: l.token, logprob: l.logprob });
    t.true(l.logprob <= 0 && l.topLogprobs.every((x, j) => j === 0 || x.logprob <= l.topLogprobs[j - 1].logprob));
  }
  const plain = await model.createSession().generateText([1], { maxTokens: 4, temperature: 0 });
  t.is(plain.logprobs, undefined);
  const err = await t.throwsAsync(model.createSession().generateText([1], { topLogprobs: 21 }));
  t.is((err as SeedinferError).code, 'INVALID_OPTION');
  // A throwing callback ends the generation with its error, and the session is free again.
  const session = model.createSession();
  const boom = await t.throwsAsync(session.generateText([1], { maxTokens: 50, onToken: () => { throw new Error('boom'); } }));
  t.is(boom?.message, 'boom');
  t.true((await session.generateText([], { maxTokens: 2 })).tokenIds.length > 0);
});

test('presence and frequency penalties change greedy output the way OpenAI defines them', async (t) => {
  const model = await modelPromise;
  const run = (o: { presencePenalty?: number; frequencyPenalty?: number }) =>
    model.createSession().generateText([1], { maxTokens: 60, temperature: 0, ignoreEos: true, repetitionLastN: 256, ...o });
  const plain = await run({});
  const distinct = (ids: number[]) => new Set(ids).size;
  const presence = await run({ presencePenalty: 2 });
  const frequency = await run({ frequencyPenalty: 2 });
  t.notDeepEqual(presence.tokenIds, plain.tokenIds);
  t.true(distinct(presence.tokenIds) > distinct(plain.tokenIds), 'fewer repeats under a presence penalty');
  t.true(distinct(frequency.tokenIds) > distinct(plain.tokenIds), 'fewer repeats under a frequency penalty');
  t.deepEqual((await run({ presencePenalty: 0, frequencyPenalty: 0 })).tokenIds, plain.tokenIds);
  const err = await t.throwsAsync(run({ presencePenalty: 3 }));
  t.is((err as SeedinferError).code, 'INVALID_OPTION');
});

test('a 1 ms timer keeps firing while 200 tokens generate', async (t) => {
  const model = await modelPromise;
  let ticks = 0;
  let longestGap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
    ticks++;
  }, 1);
  const started = performance.now();
  const result = await model.createSession().generateText([1], { maxTokens: 200, temperature: 0, ignoreEos: true });
  const elapsed = performance.now() - started;
  clearInterval(timer);
  t.is(result.tokenIds.length, 200);
  // The loop was free: the timer fired throughout, never stalled for the length of the generation.
  t.true(ticks >= Math.min(20, elapsed / 5), `ticks=${ticks} over ${elapsed.toFixed(0)} ms`);
  t.true(longestGap < Math.max(50, elapsed / 2), `longest gap ${longestGap.toFixed(1)} ms of ${elapsed.toFixed(0)} ms`);
});

test('AbortSignal stops a generation within one token with code ABORTED', async (t) => {
  const model = await modelPromise;
  const session = model.createSession();
  const controller = new AbortController();
  const generation = session.generate([1], { maxTokens: 400, temperature: 0, ignoreEos: true, signal: controller.signal });
  let chunks = 0;
  const error = await t.throwsAsync(
    (async () => {
      for await (const _ of generation) {
        if (++chunks === 5) controller.abort();
      }
    })(),
  );
  t.true(error instanceof SeedinferError);
  t.is((error as SeedinferError).code, 'ABORTED');
  t.true(session.tokenCount < 60, `tokenCount ${session.tokenCount}`);
  // The session is usable again afterwards.
  const next = await session.generateText([], { maxTokens: 3, temperature: 0 });
  t.is(next.tokenIds.length, 3);
  // An already-aborted signal never starts.
  const aborted = await t.throwsAsync(session.generateText([1], { signal: AbortSignal.abort() }));
  t.is((aborted as SeedinferError).code, 'ABORTED');
});

test('one generation at a time per session: SESSION_BUSY', async (t) => {
  const model = await modelPromise;
  const session = model.createSession();
  const first = session.generateText([1], { maxTokens: 50, temperature: 0 });
  const error = await t.throwsAsync(session.generateText([1], { maxTokens: 5 }));
  t.is((error as SeedinferError).code, 'SESSION_BUSY');
  await first;
});

test('weights: q8_0 at load keeps the greedy reference for 100 tokens; 172-column down_proj stays f32, visibly', async (t) => {
  const model = await Model.load(storiesDir, { threads: 2, weights: 'q8_0' });
  t.is(model.info.computeFormat, 'Q8_0 x int8 ×31, f32 ×5');
  t.is(model.info.weightFallbacks.length, 5);
  t.regex(model.info.weightFallbacks[0], /down_proj\.weight: 172 columns are not a multiple of 32/);
  t.regex(model.info.kernelIsa, /Q8_0 x int8: /);
  const result = await model.createSession().generateText([1], { maxTokens: 100, temperature: 0, ignoreEos: true });
  t.deepEqual(result.tokenIds, storiesExpected().greedy_token_ids.slice(0, 100));
  const bad = await t.throwsAsync(Model.load(storiesDir, { weights: 'q3' as 'q8_0' }));
  t.is((bad as SeedinferError).code, 'INVALID_OPTION');
});

test('bad input: typed errors, and the process survives', async (t) => {
  const model = await modelPromise;
  const session = model.createSession({ contextSize: 32 });
  const code = async (p: Promise<unknown>) => ((await t.throwsAsync(p)) as SeedinferError).code;
  t.is(await code(session.generateText(new Array(40).fill(5))), 'CONTEXT_OVERFLOW');
  t.is(await code(session.generateText([1, 100000])), 'INVALID_TOKEN_ID');
  t.is(await code(session.generateText([1, -3])), 'INVALID_TOKEN_ID');
  t.is(await code(session.generateText([1], { temperature: -1 })), 'INVALID_OPTION');
  t.is(await code(session.generateText([1], { topP: 0 })), 'INVALID_OPTION');
  t.is(await code(session.generateText([1], { maxTokens: 1.5 })), 'INVALID_OPTION');
  t.is(await code(session.generateText([1], { stop: [''] })), 'INVALID_OPTION');
  t.is(await code(session.generateText([])), 'INVALID_OPTION');
  t.is((t.throws(() => model.createSession({ contextSize: 100000 })) as SeedinferError).code, 'INVALID_OPTION');
  t.is((t.throws(() => model.detokenize([1e9])) as SeedinferError).code, 'INVALID_TOKEN_ID');
  t.is((t.throws(() => model.applyChatTemplate([{ role: 'user', content: 'hi' }])) as SeedinferError).code, 'NO_CHAT_TEMPLATE');
  t.is(((await t.throwsAsync(Model.load('/nonexistent/model.gguf'))) as SeedinferError).code, 'MODEL_NOT_FOUND');
  t.is(((await t.throwsAsync(Model.load(storiesDir, { threads: 0 }))) as SeedinferError).code, 'INVALID_OPTION');
  // Still fine afterwards.
  const ok = await session.generateText([1], { maxTokens: 4, temperature: 0 });
  t.is(ok.tokenIds.length, 4);
});

test('weights: q5_0 and q5_1 at load run the model in place, and their perplexity sits between q4 and q8', async (t) => {
  // Perplexity of the model's own greedy continuation, so every format is scored on the same 200 tokens.
  const tokens = storiesExpected().greedy_token_ids;
  const reference = await (await modelPromise).perplexity([1, ...tokens]);
  const scores: Record<string, number> = {};
  for (const weights of ['q4_0', 'q5_0', 'q5_1', 'q8_0'] as const) {
    const model = await Model.load(storiesDir, { threads: 2, weights });
    if (weights.startsWith('q5')) {
      t.regex(model.info.computeFormat, new RegExp(`^${weights.toUpperCase()} x int8 ×31, f32 ×5$`));
      t.regex(model.info.kernelIsa, new RegExp(`${weights.toUpperCase()} x int8: `));
    }
    scores[weights] = (await model.perplexity([1, ...tokens])).perplexity;
    model.dispose();
  }
  t.log(`perplexity of the greedy text: f32 ${reference.perplexity.toFixed(4)}`, scores);
  t.true(scores.q5_0 < scores.q4_0 && scores.q5_1 < scores.q4_0, 'five bits beat four');
  t.true(scores.q5_0 > scores.q8_0 * 0.99 && scores.q5_1 > scores.q8_0 * 0.99, 'eight bits are not beaten by much');
  t.true(Math.abs(scores.q5_1 / reference.perplexity - 1) < 0.05, 'q5_1 within 5% of f32');
});

test('WEIGHT_FORMATS and QUANTIZE_FORMATS are the binding\'s (Rust\'s) lists', async (t) => {
  const { native } = await import('../src/native.js');
  const { WEIGHT_FORMATS, QUANTIZE_FORMATS } = await import('../src/index.js');
  t.deepEqual([...WEIGHT_FORMATS], native().weightFormats());
  t.deepEqual([...QUANTIZE_FORMATS], native().quantizeFormats());
});
