// Superposition prompting on the default model (SmolLM2-135M-Instruct): with one document the session holds the
// ordinary prompt and answers as it does; with several, the path of the document that holds the answer is the most
// salient, the session holds [preamble, that document, query], and a second query over the same documents takes
// their keys and values from the prefix cache. Bad options are INVALID_OPTION; an abort is ABORTED.
import test from 'ava';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';

const modelPromise = ensureDefaultModel().then((file) => Model.load(file));

const PREAMBLE = '<|im_start|>system\nAnswer the question from the document.<|im_end|>\n<|im_start|>user\nDocument:\n';
const DOCUMENTS = [
  'The harbour of Nantucket was crowded with whaling ships. Sailors mended their nets on the docks and told stories of long voyages to the Pacific.',
  "Captain Ahab's dog is named Biscuit. Biscuit is a small brown dog who sleeps on the deck of the Pequod and barks at whales.",
  'The weather in the spring was cold and wet. Rain fell for many days, and the roads of the town turned to mud.',
];
const query = (question: string) => `\n\nQuestion: ${question}<|im_end|>\n<|im_start|>assistant\n`;

test('one document is the ordinary prompt', async (t) => {
  const model = await modelPromise;
  const session = model.createSession();
  const result = await session.superpose({ preamble: PREAMBLE, documents: [DOCUMENTS[1]], query: query("What is the name of Captain Ahab's dog?") });
  t.deepEqual(result.kept, [0]);
  const held = session.tokenIds;
  t.is(result.promptTokens, held.length);
  const answer = await session.generateText('', { temperature: 0, maxTokens: 24 });
  const plain = await model.createSession().generateText(held, { temperature: 0, maxTokens: 24 });
  t.deepEqual(answer.tokenIds, plain.tokenIds);
  t.regex(answer.text, /Biscuit/);
});

test('the document holding the answer is kept, and documents are reused by a second query', async (t) => {
  const model = await modelPromise;
  const session = model.createSession();
  const result = await session.superpose({ preamble: PREAMBLE, documents: DOCUMENTS, query: query("What is the name of Captain Ahab's dog?") });
  t.is(result.saliency.length, 3);
  t.deepEqual(result.kept, [1], JSON.stringify(result.saliency));
  const expected = [
    ...model.tokenize(PREAMBLE, { special: true }),
    ...model.tokenize(DOCUMENTS[1], { addBos: false, special: true }),
    ...model.tokenize(query("What is the name of Captain Ahab's dog?"), { addBos: false, special: true }),
  ];
  t.deepEqual(session.tokenIds, expected);
  const answer = await session.generateText('', { temperature: 0, maxTokens: 24 });
  t.regex(answer.text, /Biscuit/);
  const again = model.createSession();
  const second = await again.superpose({ preamble: PREAMBLE, documents: DOCUMENTS, query: query('What turned the roads to mud?') });
  t.deepEqual(second.kept, [2], JSON.stringify(second.saliency));
  t.true(second.reusedTokens > 0, `reused ${second.reusedTokens}`);
});

test('bad superposition options are INVALID_OPTION and an abort is ABORTED', async (t) => {
  const model = await modelPromise;
  const session = model.createSession();
  for (const options of [
    { documents: [], query: 'q' },
    { documents: ['a'], query: 'q', topK: 2 },
    { documents: ['a'], query: 'q', positions: 'equilibrium' },
    { documents: ['a'], query: '' },
    { documents: ['a'], query: 'q', extra: 1 },
    { documents: [42], query: 'q' },
  ]) {
    const error = await t.throwsAsync(session.superpose({ preamble: 'Hi', ...options } as never), { instanceOf: SeedinferError });
    t.is(error?.code, 'INVALID_OPTION', JSON.stringify(options));
  }
  t.is(session.tokenCount, 0);
  const aborted = await t.throwsAsync(
    session.superpose({ preamble: PREAMBLE, documents: DOCUMENTS, query: 'q', signal: AbortSignal.abort() }),
    { instanceOf: SeedinferError },
  );
  t.is(aborted?.code, 'ABORTED');
});
