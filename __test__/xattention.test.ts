// XAttention through the public API (issue 24): threshold 1 gives the dense output token for token on the default
// model (alone and with LazyLLM), a sparse prefill reports the share of blocks it attended, its session stays a
// plain one (saved, continued), and bad settings are typed errors.
import test from 'ava';
import path from 'node:path';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import type { GenerateOptions, PrefillOptions } from '../index.js';
import { tempDir } from './helpers/paths.js';
import { greedy } from './helpers/options.js';
import { readmeTokens } from './helpers/prompts.js';

const smol = ensureDefaultModel().then((p) => Model.load(p, { threads: 2, kvCache: { prefixCaching: false } }));

/** 1,000 tokens of real English (this repository's README): eight query blocks of 128. */
function readmePrompt(model: Model): number[] {
  return readmeTokens(model, 1000);
}

test('xattention with threshold 1 gives the dense output, alone and with LazyLLM', async (t) => {
  const model = await smol;
  const prompt = await readmePrompt(model);
  const dense = await model.createSession().generateText(prompt, greedy(24));
  t.is(dense.prefill.attentionDensity, 1);
  const switches: PrefillOptions[] = [
    { strategy: 'xattention', threshold: 1 },
    { strategy: 'lazyllm', schedule: [{ layer: 10, keep: 1 }], xattention: { threshold: 1, stride: 16 } },
  ];
  for (const prefill of switches) {
    const out = await model.createSession().generateText(prompt, greedy(24, prefill));
    t.deepEqual(out.tokenIds, dense.tokenIds, JSON.stringify(prefill));
    t.is(out.prefill.attentionDensity, 1);
  }
});

test('a sparse prefill attends to fewer blocks, says how many, and leaves a plain session', async (t) => {
  const model = await smol;
  const prompt = await readmePrompt(model);
  const session = model.createSession();
  const out = await session.generateText(prompt, greedy(8, { strategy: 'xattention', blockSize: 64, threshold: 0.8 }));
  t.is(out.prefill.strategy, 'xattention');
  t.true(out.prefill.attentionDensity > 0 && out.prefill.attentionDensity < 0.9, String(out.prefill.attentionDensity));
  t.deepEqual(out.prefill.layerFractions, new Array(30).fill(1));
  // Every position holds its keys and values: the session saves, and the reloaded one continues as it does.
  const file = path.join(tempDir('xattention-save'), 'sparse.session');
  await session.save(file);
  const restored = await model.loadSession(file);
  const next = await session.generateText(' And', greedy(8));
  const again = await restored.generateText(' And', greedy(8));
  t.deepEqual(again.tokenIds, next.tokenIds);
  t.is(next.prefill.attentionDensity, 1, 'a later dense call attends densely');
});

test('bad xattention settings are INVALID_OPTION, naming the setting', async (t) => {
  const model = await smol;
  const cases: [unknown, RegExp][] = [
    [{ strategy: 'xattention', threshold: 0 }, /threshold/],
    [{ strategy: 'xattention', blockSize: 100 }, /blockSize/],
    [{ strategy: 'xattention', stride: 65 }, /stride/],
    [{ strategy: 'xattention', treshold: 0.5 }, /threshold/],
    [{ strategy: 'lazyllm', xattention: { blocksize: 64 } }, /blockSize/],
    [{ strategy: 'dense', xattention: {} }, /xattention/],
  ];
  for (const [prefill, message] of cases) {
    const error = await t.throwsAsync(model.createSession().generateText('Hello', greedy(2, prefill as PrefillOptions)), {
      instanceOf: SeedinferError,
    });
    t.is(error?.code, 'INVALID_OPTION', JSON.stringify(prefill));
    t.regex(error?.message ?? '', message, JSON.stringify(prefill));
  }
});
