// Speculative decoding with prompt-lookup drafts on the default model (SmolLM2-135M-Instruct): greedy output with
// drafts is plain greedy output token for token, on prompts that make the model copy its input (where drafts are
// accepted) and on ones that do not, alone and next to other sessions generating; bad options are INVALID_OPTION.
import test from 'ava';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';

const modelPromise = ensureDefaultModel().then((file) => Model.load(file));

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
  // Next to sessions decoding at the same time (those batch; the speculative one verifies on its own).
  const prompt = model.applyChatTemplate([{ role: 'user', content: GROUNDED_TASKS[2] }]);
  const alone = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 64 });
  const [together] = await Promise.all([
    model.createSession().generateText(prompt, { temperature: 0, maxTokens: 64, speculative: { maxDraftTokens: 6, ngram: 2 } }),
    model.createSession().generateText('Once upon a time', { temperature: 0.8, seed: 3, maxTokens: 64 }),
    model.createSession().generateText('The weather today', { temperature: 0, maxTokens: 64 }),
  ]);
  t.deepEqual(together.tokenIds, alone.tokenIds);
});

test('speculative options are checked', async (t) => {
  const model = await modelPromise;
  const session = model.createSession();
  for (const speculative of [{ draft: 'model' }, { maxDraftTokens: 0 }, { ngram: 17 }, { lookahead: 3 }, 'yes']) {
    const error = await t.throwsAsync(session.generateText('Hi', { temperature: 0, speculative: speculative as never }), { instanceOf: SeedinferError });
    t.is(error?.code, 'INVALID_OPTION', JSON.stringify(speculative));
  }
  const sampled = await t.throwsAsync(session.generateText('Hi', { temperature: 0.7, speculative: {} }), { instanceOf: SeedinferError });
  t.is(sampled?.code, 'INVALID_OPTION');
  t.regex(sampled?.message ?? '', /greedily/);
});
