// Superposition prompting against the ordinary concatenated prompt on multi-document question answering.
//
//   npm run bench:superposition -- --tasks 8 --documents 8 --threads 2
//
// Each task: `--documents` passages of Moby-Dick (300-600 tokens each, seeded excerpts from bench/longctx's corpus),
// one of them with a planted fact (a sentence at a sentence boundary); the question asks for that fact. The default
// model answers greedily (16 tokens) in its chat template, (a) from the ordinary prompt [preamble, every document,
// question] and (b) by superposition (`session.superpose`: one path per document, the most salient kept), then (c) a
// second question over the same documents by superposition, whose documents come from the prefix cache. Reported per
// setting: median time to first token (superposition: the superpose call plus the answer's first token), answers
// that contain the fact, and for (b) how often the kept path is the document holding it. (a) runs on a model
// instance of its own, so neither setting reuses the other's cached blocks.
import os from 'node:os';
import { Model, ensureDefaultModel } from '../src/index.js';
import { argument, median } from './cli-args.js';
import { loadCorpus } from './longctx/corpus.js';
import { TokenizedCorpus, seededRandom } from './longctx/tasks.js';

const threads = Number(argument('threads') ?? 2);
const taskCount = Number(argument('tasks') ?? 8);
const documentCount = Number(argument('documents') ?? 8);

const FACTS: [fact: string, question: string, answer: RegExp][] = [
  ["The name of the ship's cat is Pepper.", "What is the name of the ship's cat?", /pepper/i],
  ['The secret password of the crew is tangerine.', 'What is the secret password of the crew?', /tangerine/i],
  ['The cabin boy was born in the city of Lisbon.', 'In which city was the cabin boy born?', /lisbon/i],
  ["The cook's lucky number is forty-seven.", "What is the cook's lucky number?", /forty-seven|47/i],
  ["The sailmaker's parrot is called Marmalade.", "What is the sailmaker's parrot called?", /marmalade/i],
  ['The captain hides his gold in a copper kettle.', 'Where does the captain hide his gold?', /kettle/i],
  ["The harpooner's favourite fruit is the mango.", "What is the harpooner's favourite fruit?", /mango/i],
  ['The first mate plays the violin every evening.', 'Which instrument does the first mate play?', /violin/i],
];
const SECOND_QUESTION = 'How many masts does the ship in the documents have?';

const PREAMBLE = '<|im_start|>system\nAnswer the question from the documents, in a few words.<|im_end|>\n<|im_start|>user\n';
const query = (question: string) => `\n\nQuestion: ${question}<|im_end|>\n<|im_start|>assistant\n`;
const documentText = (text: string) => `Document:\n${text}`;

const file = await ensureDefaultModel();
const model = await Model.load(file, { threads });
const ordinaryModel = await Model.load(file, { threads });
const corpus = new TokenizedCorpus(model, (await loadCorpus()).text);
const random = seededRandom(7);
const contextSize = model.info.contextLength;

const rows = { ordinary: [] as number[], superposed: [] as number[], second: [] as number[] };
let ordinaryRight = 0;
let superposedRight = 0;
let keptRight = 0;
let promptTokens = 0;
let reused = 0;
for (let task = 0; task < taskCount; task++) {
  const [fact, question, answer] = FACTS[task % FACTS.length];
  const holder = Math.floor(random() * documentCount);
  const documents: string[] = [];
  for (let d = 0; d < documentCount; d++) {
    const length = 300 + Math.floor(random() * 300);
    const start = corpus.excerptStart(length, random);
    let ids = corpus.ids.slice(start, start + length);
    if (d === holder) {
      const at = corpus.sentenceBoundary(start, length, Math.floor(random() * length));
      ids = [...ids.slice(0, at), ...model.tokenize(` ${fact}`, { addBos: false, special: false }), ...ids.slice(at)];
    }
    documents.push(documentText(model.detokenize(ids)));
  }
  const found = (text: string) => answer.test(text);

  // (b) superposition, cold.
  const session = model.createSession({ contextSize });
  const report = await session.superpose({ preamble: PREAMBLE, documents, query: query(question) });
  const answered = await session.generateText('', { temperature: 0, maxTokens: 16 });
  rows.superposed.push(report.timeMs + answered.timings.ttftMs);
  superposedRight += found(answered.text) ? 1 : 0;
  keptRight += report.kept[0] === holder ? 1 : 0;
  promptTokens = report.promptTokens;
  session.dispose();

  // (c) a second question over the same documents.
  const again = model.createSession({ contextSize });
  const second = await again.superpose({ preamble: PREAMBLE, documents, query: query(SECOND_QUESTION) });
  const secondAnswer = await again.generateText('', { temperature: 0, maxTokens: 16 });
  rows.second.push(second.timeMs + secondAnswer.timings.ttftMs);
  reused += second.reusedTokens / second.promptTokens;
  again.dispose();

  // (a) the ordinary prompt.
  const ordinary = ordinaryModel.createSession({ contextSize });
  const prompt = `${PREAMBLE}${documents.join('\n\n')}${query(question)}`;
  const plain = await ordinary.generateText(prompt, { temperature: 0, maxTokens: 16 });
  rows.ordinary.push(plain.timings.ttftMs);
  ordinaryRight += found(plain.text) ? 1 : 0;
  ordinary.dispose();
  console.error(`task ${task + 1}/${taskCount}: ordinary ${plain.timings.ttftMs.toFixed(0)} ms ${JSON.stringify(plain.text.slice(0, 40))}; superposed ${(report.timeMs + answered.timings.ttftMs).toFixed(0)} ms, kept ${report.kept[0]} (fact in ${holder}) ${JSON.stringify(answered.text.slice(0, 40))}`);
}

console.log(
  `\nSuperposition prompting, ${taskCount} tasks of ${documentCount} documents (300-600 tokens each, ~${promptTokens} prompt tokens with the query copies), ${model.info.path.split('/').pop()}, ${threads} threads, ${os.cpus()[0]?.model}\n`,
);
console.log('| setting | median TTFT (ms) | vs ordinary | answers with the fact | kept path holds the fact | prompt tokens from the prefix cache |');
console.log('|---|---|---|---|---|---|');
const ordinaryTtft = median(rows.ordinary);
const line = (name: string, ttft: number, right: string, kept: string, cached: string) =>
  console.log(`| ${name} | ${ttft.toFixed(0)} | ${(ordinaryTtft / ttft).toFixed(2)}x | ${right} | ${kept} | ${cached} |`);
line('ordinary prompt', ordinaryTtft, `${ordinaryRight} / ${taskCount}`, '', '');
line('superposition (top 1, max positions)', median(rows.superposed), `${superposedRight} / ${taskCount}`, `${keptRight} / ${taskCount}`, '0');
line('superposition, second question', median(rows.second), '', '', `${((100 * reused) / taskCount).toFixed(0)}%`);
model.dispose();
ordinaryModel.dispose();
process.exit(0);
