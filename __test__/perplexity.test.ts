// model.perplexity on a real float32 checkpoint (stories260K): the result equals a recomputation from
// session.lastLogits() fed token by token, windows are counted as documented, bad input gets coded errors, an
// AbortSignal stops it.
import test, { type ExecutionContext } from 'ava';
import { Model, SeedinferError } from '../src/index.js';
import { storiesDir } from './helpers/paths.js';

const modelPromise = Model.load(storiesDir, { threads: 2 });

const TEXT =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog, Max. ' +
  'One day, Lily saw a big red ball under a tree. She ran to get it, but a boy was already holding it. ' +
  '"Can I play too?" Lily asked. The boy smiled and said yes. They kicked the ball all afternoon.';

/** `-log softmax(logits)[target]` in float64. */
function nll(logits: Float32Array, target: number): number {
  let max = -Infinity;
  for (const l of logits) max = Math.max(max, l);
  let sum = 0;
  for (const l of logits) sum += Math.exp(l - max);
  return Math.log(sum) + max - logits[target];
}

const code = async (t: ExecutionContext, p: Promise<unknown>) =>
  ((await t.throwsAsync(p)) as SeedinferError).code;

test('perplexity equals a recomputation from session.lastLogits() fed token by token', async (t) => {
  const model = await modelPromise;
  const tokens = model.tokenize(TEXT, { addBos: true, special: false }).slice(0, 50);
  t.is(tokens[0], 1, 'BOS first');
  t.is(tokens.length, 50);
  const window = 20;
  const result = await model.perplexity(tokens, { window });
  // Recompute each window from a fresh session: the logits after token i score token i + 1.
  const expected: { tokens: number; nll: number }[] = [];
  for (let start = 0; start < tokens.length; start += window) {
    const span = tokens.slice(start, start + window);
    const session = model.createSession({ contextSize: window });
    let sum = 0;
    for (let i = 0; i + 1 < span.length; i++) {
      await session.predictNextTokens([span[i]]);
      const logits = session.lastLogits();
      if (!logits) return t.fail('no logits');
      sum += nll(logits, span[i + 1]);
    }
    session.dispose();
    expected.push({ tokens: span.length - 1, nll: sum });
  }
  t.deepEqual(
    result.windows.map((w) => w.tokens),
    [19, 19, 9],
  );
  for (const [i, w] of result.windows.entries()) {
    t.true(Math.abs(w.nll - expected[i].nll) < 1e-4, `window ${i}: ${w.nll} vs ${expected[i].nll}`);
  }
  const total = expected.reduce((s, w) => s + w.nll, 0);
  t.is(result.tokens, 47);
  t.is(result.window, window);
  t.true(Math.abs(result.nll - total) < 1e-4, `${result.nll} vs ${total}`);
  t.true(Math.abs(result.perplexity - Math.exp(total / 47)) < 1e-6 * result.perplexity);
});

test('text is tokenized with BOS; the default window is min(512, context); real text has a perplexity above 1', async (t) => {
  const model = await modelPromise;
  const fromText = await model.perplexity(TEXT);
  const ids = model.tokenize(TEXT, { addBos: true, special: false });
  const fromIds = await model.perplexity(ids);
  t.deepEqual(fromText, fromIds);
  t.is(fromText.window, Math.min(512, model.info.contextLength));
  t.is(fromText.windows.length, 1);
  t.is(fromText.tokens, ids.length - 1);
  t.true(Number.isFinite(fromText.perplexity) && fromText.perplexity > 1, String(fromText.perplexity));
  // A model trained on such stories does far better than uniform over its 512-token vocabulary.
  t.true(fromText.perplexity < 128, String(fromText.perplexity));
  t.true(Math.abs(fromText.perplexity - Math.exp(fromText.nll / fromText.tokens)) < 1e-9 * fromText.perplexity);
  // A typed array works as well.
  t.deepEqual(await model.perplexity(Uint32Array.from(ids)), fromIds);
});

test('windows score every token but their first, including a trailing window of one token', async (t) => {
  const model = await modelPromise;
  const ids = model.tokenize(TEXT, { addBos: true, special: false });
  const tokens = [...ids, ...ids].slice(0, 65);
  const result = await model.perplexity(tokens, { window: 32 });
  t.deepEqual(
    result.windows.map((w) => w.tokens),
    [31, 31, 0],
  );
  t.is(result.tokens, 65 - 3);
  t.is(result.windows[2].nll, 0);
});

test('bad input is refused with coded errors', async (t) => {
  const model = await modelPromise;
  const ids = model.tokenize(TEXT);
  t.is(await code(t, model.perplexity(ids, { window: 1 })), 'INVALID_OPTION');
  t.is(await code(t, model.perplexity(ids, { window: 2.5 })), 'INVALID_OPTION');
  t.is(await code(t, model.perplexity(ids, { window: model.info.contextLength + 1 })), 'INVALID_OPTION');
  t.is(await code(t, model.perplexity(ids, null as unknown as object)), 'INVALID_OPTION');
  t.is(await code(t, model.perplexity([1])), 'INVALID_OPTION');
  t.is(await code(t, model.perplexity([])), 'INVALID_OPTION');
  t.is(await code(t, model.perplexity('')), 'INVALID_OPTION');
  t.is(await code(t, model.perplexity([1, model.info.vocabSize])), 'INVALID_TOKEN_ID');
  t.is(await code(t, model.perplexity([1, -3])), 'INVALID_TOKEN_ID');
  t.is(await code(t, model.perplexity([1, 2.5])), 'INVALID_TOKEN_ID');
  const error = (await t.throwsAsync(model.perplexity(ids, { window: 1 }))) as SeedinferError;
  t.true(error instanceof SeedinferError);
  t.is(error.message, 'option window must be an integer in [2, 512], got 1');
  const disposed = await Model.load(storiesDir, { threads: 1 });
  disposed.dispose();
  t.is(await code(t, disposed.perplexity(ids)), 'DISPOSED');
});

test('an AbortSignal stops the evaluation with code ABORTED, and the event loop runs meanwhile', async (t) => {
  const model = await modelPromise;
  t.is(await code(t, model.perplexity(TEXT, { signal: AbortSignal.abort() })), 'ABORTED');
  const ids = model.tokenize(TEXT, { addBos: false, special: false });
  // About 200,000 tokens: far longer than the 50 ms before the abort.
  const long = Array.from({ length: 200_000 }, (_, i) => ids[i % ids.length]);
  const controller = new AbortController();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  setTimeout(() => controller.abort(), 50);
  const started = Date.now();
  t.is(await code(t, model.perplexity(long, { signal: controller.signal })), 'ABORTED');
  clearInterval(timer);
  t.true(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
  t.true(ticks >= 3, `${ticks} timer ticks during the evaluation`);
  // The model still works afterwards.
  t.true((await model.perplexity(TEXT)).perplexity > 1);
});
