// Prompt token pruning through the public API (issue 6): the exactness switch of each strategy on the default
// model (SmolLM2), the per-layer report, revival from the aux cache in decode (stories260K), bad options, abort.
import test from 'ava';
import path from 'node:path';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import type { GenerateOptions, PrefillOptions } from '../index.js';
import { storiesDir, storiesExpected, tempDir } from './helpers/paths.js';
import { greedy } from './helpers/options.js';
import { readmeTokens } from './helpers/prompts.js';

const smol = ensureDefaultModel().then((p) => Model.load(p, { threads: 2, kvCache: { prefixCaching: false } }));
const stories = Model.load(storiesDir, { threads: 2, kvCache: { blockSize: 16, prefixCaching: false } });

/** About 900 tokens of real English (this repository's README) followed by a question. */
function readmePrompt(model: Model): number[] {
  const body = readmeTokens(model, 900);
  return [...body, ...model.tokenize('\n\nQuestion: what does seedinfer run? Answer:', { addBos: false, special: false })];
}

/** The stories260K prompt the Rust tests use: BOS and 149 tokens of the model's own story. */
function storyPrompt(): number[] {
  return [1, ...storiesExpected().greedy_token_ids.slice(0, 149)];
}

test('keeping every token gives the dense output on the default model, for every strategy', async (t) => {
  const model = await smol;
  const prompt = await readmePrompt(model);
  const dense = await model.createSession().generateText(prompt, greedy(32));
  t.deepEqual(dense.prefill.layerFractions, new Array(30).fill(1));
  const switches: PrefillOptions[] = [
    { strategy: 'lazyllm', schedule: [{ layer: 10, keep: 1 }, { layer: 18, keep: 1 }, { layer: 25, keep: 1 }] },
    { strategy: 'promptdistill', keepTokens: 100_000 },
    { strategy: 'feather', schedule: [{ layer: 7, keep: 1 }, { layer: 15, keep: 1 }] },
  ];
  for (const prefill of switches) {
    const out = await model.createSession().generateText(prompt, greedy(32, prefill));
    t.deepEqual(out.tokenIds, dense.tokenIds, prefill.strategy);
    t.is(out.prefill.droppedTokens, 0);
  }
});

test('the default LazyLLM schedule computes 70/50/30% of the prompt at 35/60/85% depth and reports it', async (t) => {
  const model = await smol;
  const prompt = await readmePrompt(model);
  const session = model.createSession();
  const out = await session.generateText(prompt, greedy(4, { strategy: 'lazyllm' }));
  t.is(out.prefill.strategy, 'lazyllm');
  const n = prompt.length;
  const kept = (f: number) => Math.ceil(f * n) / n;
  const expected = Array.from({ length: 30 }, (_, l) => (l <= 10 ? 1 : l <= 18 ? kept(0.7) : l <= 25 ? kept(0.5) : kept(0.3)));
  t.deepEqual(out.prefill.layerFractions, expected);
  t.is(out.prefill.droppedTokens, n - Math.ceil(0.3 * n));
  const logits = session.lastLogits();
  t.truthy(logits);
  t.is(logits?.length, 49152);
  // The pruned session holds holes: it refuses to be saved, with a typed error.
  const file = path.join(tempDir('pruned-save'), 'pruned.session');
  const error = await t.throwsAsync(session.save(file), { instanceOf: SeedinferError });
  t.is(error?.code, 'INVALID_OPTION');
});

test('a token pruned in prefill and selected in decode is computed from the aux cache, once per layer', async (t) => {
  const model = await stories;
  const prompt = storyPrompt();
  const session = model.createSession();
  const first = await session.generateText(prompt, greedy(1, { strategy: 'lazyllm', schedule: [{ layer: 2, keep: 0.5 }] }));
  const dropped = first.prefill.droppedTokens;
  t.is(dropped, prompt.length - Math.ceil(0.5 * prompt.length));
  t.deepEqual(first.prefill.layerTokens, [150, 150, 150, 75, 75]);
  // Continue with a schedule that selects every token at layer 2: each dropped token comes back there.
  const second = await session.generateText([], greedy(3, { strategy: 'lazyllm', schedule: [{ layer: 2, keep: 1 }] }));
  t.is(second.prefill.revivedTokens, dropped);
  // Computed at layers 3 and 4 only: from their layer-2 hidden state, never from layer 0.
  t.deepEqual(second.prefill.layerTokens, [1, 1, 1, 1 + dropped, 1 + dropped]);
  t.is(second.prefill.decodeRevivedTokens, 0);
  // With no holes left the session saves again.
  await t.notThrowsAsync(session.save(path.join(tempDir('revived-save'), 'revived.session')));
});

test('LazyLLM decode steps select again and revive tokens', async (t) => {
  const model = await stories;
  const out = await model
    .createSession()
    .generateText(storyPrompt(), greedy(24, { strategy: 'lazyllm', schedule: [{ layer: 1, keep: 0.5 }, { layer: 3, keep: 0.25 }] }));
  t.is(out.tokenIds.length, 24);
  t.true(out.prefill.decodeRevivedTokens > 0);
  // reselectInDecode: false keeps the prefill's selection: no revival, a dropped token stays dropped.
  const fixed = await model.createSession().generateText(
    storyPrompt(),
    greedy(24, { strategy: 'lazyllm', schedule: [{ layer: 1, keep: 0.5 }, { layer: 3, keep: 0.25 }], reselectInDecode: false }),
  );
  t.is(fixed.prefill.decodeRevivedTokens, 0);
  t.deepEqual(fixed.prefill.layerTokens, out.prefill.layerTokens);
});

test('bad prefill options are typed errors and leave the session usable', async (t) => {
  const model = await stories;
  const session = model.createSession();
  const bad: unknown[] = [
    { strategy: 'sparse' },
    { strategy: 'lazyllm', schedule: [{ layer: 4, keep: 0.5 }] },
    { strategy: 'lazyllm', schedule: [{ layer: 2, keep: 0 }] },
    { strategy: 'lazyllm', schedule: [{ layer: 2, keep: 0.5 }, { layer: 1, keep: 0.3 }] },
    { strategy: 'lazyllm', schedule: 'early' },
    { strategy: 'promptdistill', pooling: 4 },
    { strategy: 'feather', uniformShare: 2 },
  ];
  for (const prefill of bad) {
    const error = await t.throwsAsync(session.generateText([1, 2, 3], greedy(2, prefill as PrefillOptions)), {
      instanceOf: SeedinferError,
    });
    t.is(error?.code, 'INVALID_OPTION', JSON.stringify(prefill));
  }
  t.is(session.tokenCount, 0);
  const out = await session.generateText(storyPrompt(), greedy(5, { strategy: 'promptdistill', keepTokens: 32, questionTokens: 8 }));
  t.is(out.prefill.layerTokens[3], 40);
});

test('aborting a pruned prefill rejects with ABORTED and the session continues', async (t) => {
  const model = await smol;
  const prompt = await readmePrompt(model);
  const session = model.createSession();
  const controller = new AbortController();
  const generation = session.generate(prompt, { ...greedy(64, { strategy: 'lazyllm' }), signal: controller.signal });
  setTimeout(() => controller.abort(), 30);
  const error = await t.throwsAsync(generation.result, { instanceOf: SeedinferError });
  t.is(error?.code, 'ABORTED');
  const next = await session.generateText(' More text.', greedy(4));
  t.is(next.tokenIds.length, 4);
});
