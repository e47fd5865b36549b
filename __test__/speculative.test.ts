// Speculative decoding on the default model (SmolLM2-135M-Instruct): greedy output with drafts from prompt lookup,
// from the model's first layers and from a draft model (an 8-bit copy) is plain greedy output token for token, on
// prompts that make the model copy its input (where lookup drafts are accepted) and on ones that do not, alone and
// next to other sessions generating, and with a response format; sampled output with lookup drafts is plain
// sampling's for a seed; bad options and unusable draft models are INVALID_OPTION.
import test from 'ava';
import path from 'node:path';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';

const modelPromise = ensureDefaultModel().then((file) => Model.load(file));
const STORIES_DIR = path.resolve(import.meta.dirname, '../../shared/models/stories260K');

export const GROUNDED_TASKS = [
  'Repeat this sentence exactly: The quick brown fox jumps over the lazy dog, and the dog does not even notice the fox at all.',
  'Rewrite this code with the variable renamed from x to count:\n```python\nx = 0\nfor item in items:\n    if item.ok:\n        x += 1\nprint(x)\n```',
  'Copy the list below in the same order:\n- apples\n- bananas\n- cherries\n- dates\n- elderberries',
  'What is the capital of France?',
];

test('prompt-lookup drafts give plain greedy decoding, alone and next to other generations', async (t) => {
  const model = await modelPromise;
  let accepted = 0;
  for (const task of GROUNDED_TASKS) {
    const prompt = model.applyChatTemplate([{ role: 'user', content: task }]);
    const plain = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 96 });
    const spec = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 96, speculative: {} });
    t.deepEqual(spec.tokenIds, plain.tokenIds, task);
    t.is(spec.text, plain.text);
    t.truthy(spec.speculative);
    t.is(plain.speculative, undefined);
    accepted += spec.speculative?.accepted ?? 0;
  }
  t.true(accepted > 20, `accepted ${accepted}`);
  // Next to sessions decoding at the same time: the speculative one verifies its drafts in their passes.
  const prompt = model.applyChatTemplate([{ role: 'user', content: GROUNDED_TASKS[2] }]);
  const alone = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 64 });
  const before = model.batchStats();
  const [together] = await Promise.all([
    model.createSession().generateText(prompt, { temperature: 0, maxTokens: 64, speculative: { maxDraftTokens: 6, ngram: 2 } }),
    model.createSession().generateText('Once upon a time', { temperature: 0.8, seed: 3, maxTokens: 64 }),
    model.createSession().generateText('The weather today', { temperature: 0, maxTokens: 64 }),
  ]);
  t.deepEqual(together.tokenIds, alone.tokenIds);
  // The drafts were verified in the batcher's passes, next to the other sessions' decode steps.
  const after = model.batchStats();
  t.true(after.verifiedTokens - before.verifiedTokens > 0);
  t.true(after.largest >= 2);
});

test('drafts from the first layers and from a draft model give plain greedy decoding', async (t) => {
  const model = await modelPromise;
  const draft = await Model.load(await ensureDefaultModel(), { weights: 'q8_0' });
  try {
    for (const speculative of [{ draft: 'self' as const }, { draft: 'self' as const, draftLayers: 24, maxDraftTokens: 4 }, { draft }]) {
      let accepted = 0;
      for (const task of GROUNDED_TASKS.slice(1)) {
        const prompt = model.applyChatTemplate([{ role: 'user', content: task }]);
        const plain = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 48 });
        const spec = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 48, speculative });
        t.deepEqual(spec.tokenIds, plain.tokenIds, task);
        accepted += spec.speculative?.accepted ?? 0;
      }
      // Half the layers without training draft poorly (a few tokens accepted); an 8-bit copy drafts well.
      t.log(typeof speculative.draft === 'string' ? JSON.stringify(speculative) : 'draft model', accepted);
      t.true(accepted >= (speculative.draft === draft ? 40 : 1), `accepted ${accepted}`);
    }
  } finally {
    draft.dispose();
  }
});

test('sampled output with prompt-lookup drafts is plain sampling for a seed', async (t) => {
  const model = await modelPromise;
  const prompt = model.applyChatTemplate([{ role: 'user', content: GROUNDED_TASKS[0] }]);
  let accepted = 0;
  for (const seed of [1, 2, 3]) {
    const options = { temperature: 0.7, seed, maxTokens: 48 };
    const plain = await model.createSession().generateText(prompt, options);
    const spec = await model.createSession().generateText(prompt, { ...options, speculative: {} });
    t.deepEqual(spec.tokenIds, plain.tokenIds);
    accepted += spec.speculative?.accepted ?? 0;
  }
  t.true(accepted >= 5, `accepted ${accepted}`);
});

test('with a response format, drafts give the plain constrained output', async (t) => {
  const model = await modelPromise;
  const example = '{"city": "Paris", "country": "France", "population": 2100000}';
  const prompt = model.applyChatTemplate([{ role: 'user', content: `Answer in JSON like ${example}. What is the capital of Italy?` }]);
  const responseFormat = {
    type: 'json_schema' as const,
    schema: {
      type: 'object',
      properties: { city: { type: 'string' }, country: { type: 'string' }, population: { type: 'integer' } },
      required: ['city', 'country', 'population'],
    },
  };
  const plain = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 64, responseFormat });
  const spec = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 64, responseFormat, speculative: {} });
  t.deepEqual(spec.tokenIds, plain.tokenIds);
  t.truthy(JSON.parse(spec.text));
  t.true((spec.speculative?.accepted ?? 0) > 0);
});

test('speculative options are checked', async (t) => {
  const model = await modelPromise;
  const session = model.createSession();
  for (const speculative of [{ draft: 'model' }, { draft: {} }, { draftLayers: 3 }, { draft: 'self', draftLayers: 30 }, { maxDraftTokens: 0 }, { ngram: 17 }, { lookahead: 3 }, 'yes']) {
    const error = await t.throwsAsync(session.generateText('Hi', { temperature: 0, speculative: speculative as never }), { instanceOf: SeedinferError });
    t.is(error?.code, 'INVALID_OPTION', JSON.stringify(speculative));
  }
  // A draft model with another vocabulary, and a disposed one.
  const stories = await Model.load(STORIES_DIR);
  const other = await t.throwsAsync(session.generateText('Hi', { temperature: 0, speculative: { draft: stories } }), { instanceOf: SeedinferError });
  t.is(other?.code, 'INVALID_OPTION');
  t.regex(other?.message ?? '', /vocabulary/);
  stories.dispose();
  const disposed = await t.throwsAsync(session.generateText('Hi', { temperature: 0, speculative: { draft: stories } }), { instanceOf: SeedinferError });
  t.is(disposed?.code, 'DISPOSED');
  t.is(session.tokenCount, 0);
});
