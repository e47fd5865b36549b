// The default model (SmolLM2-135M-Instruct Q4_1 GGUF) against llama.cpp: tokenizer, teacher-forced next-token
// predictions, greedy continuations, and a chat answer. Reference: fixtures/llamacpp-smollm2.json, made by
// bench/peers/make-reference.mjs with node-llama-cpp 3.22.1.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, ensureDefaultModel } from '../src/index.js';
import { repoRoot } from './helpers/paths.js';

interface Reference {
  tokenization: { cases: { name: string; text: string; noSpecial: number[]; special: number[] }[] };
  teacherForced: { tokens: number[]; argmax: number[]; top2Margin: number[] };
  greedy: { cases: { name: string; promptTokens: number[]; tokens: number[]; text: string }[] };
}

const reference: Reference = JSON.parse(
  fs.readFileSync(path.join(repoRoot, '__test__', 'fixtures', 'llamacpp-smollm2.json'), 'utf8'),
);
const modelPromise = ensureDefaultModel().then((file) => Model.load(file));

test('GGUF metadata: SmolLM2-135M shape, interleaved RoPE, tied embeddings, chat template', async (t) => {
  const { info } = await modelPromise;
  t.is(info.architecture, 'llama');
  t.is(info.fileFormat, 'gguf');
  t.deepEqual([info.layers, info.hiddenSize, info.attentionHeads, info.kvHeads, info.headDim], [30, 576, 9, 3, 64]);
  t.is(info.vocabSize, 49152);
  t.is(info.ropeStyle, 'interleaved');
  t.true(info.tiedEmbeddings);
  t.deepEqual(info.fileTensorFormats, { F32: 61, Q4_1: 210, Q8_0: 1 });
  t.true(info.parameterCount > 134e6 && info.parameterCount < 136e6, String(info.parameterCount));
});

test('tokenizer matches llama.cpp on every reference string, with and without special tokens', async (t) => {
  const model = await modelPromise;
  t.true(reference.tokenization.cases.length >= 20);
  for (const c of reference.tokenization.cases) {
    t.deepEqual(model.tokenize(c.text, { addBos: false, special: false }), c.noSpecial, `${c.name} (plain)`);
    t.deepEqual(model.tokenize(c.text, { addBos: false, special: true }), c.special, `${c.name} (special)`);
    t.is(model.detokenize(c.noSpecial), c.text, `${c.name} round-trips`);
  }
});

test('teacher-forced next-token argmax agrees with llama.cpp on >= 98% of a real passage', async (t) => {
  const model = await modelPromise;
  const { tokens, argmax } = reference.teacherForced;
  t.true(tokens.length >= 256);
  const session = model.createSession({ contextSize: 1024 });
  const predicted = await session.predictNextTokens(tokens);
  t.is(predicted.length, tokens.length);
  const agree = predicted.filter((p, i) => p === argmax[i]).length / tokens.length;
  t.log(`agreement with llama.cpp: ${(agree * 100).toFixed(2)}% of ${tokens.length} positions`);
  t.true(agree >= 0.98, `agreement ${agree}`);
});

test('greedy continuations equal llama.cpp for their first 32 tokens', async (t) => {
  const model = await modelPromise;
  for (const c of reference.greedy.cases) {
    const result = await model
      .createSession({ contextSize: 512 })
      .generateText(c.promptTokens, { temperature: 0, maxTokens: c.tokens.length });
    t.deepEqual(result.tokenIds, c.tokens, c.name);
  }
});

test('chat: "What is the capital of France?" is answered with Paris', async (t) => {
  const model = await modelPromise;
  const prompt = model.applyChatTemplate([{ role: 'user', content: 'What is the capital of France?' }]);
  t.true(prompt.startsWith('<|im_start|>system\n'));
  t.true(prompt.endsWith('<|im_start|>assistant\n'));
  const result = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 40 });
  t.regex(result.text, /Paris/);
  t.is(result.stopReason, 'eos');
});
