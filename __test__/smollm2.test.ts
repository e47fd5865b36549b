// The default model (SmolLM2-135M-Instruct Q4_1 GGUF) against llama.cpp: tokenizer, teacher-forced next-token
// predictions, greedy continuations, and a chat answer. Reference: fixtures/llamacpp-smollm2.json, made by
// bench/peers/make-reference.mjs with node-llama-cpp 3.22.1.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import { greedyStepAgreement, type GreedyCase, type TeacherForced } from './helpers/llamacpp-reference.js';
import { repoRoot } from './helpers/paths.js';

interface Reference {
  tokenization: { cases: { name: string; text: string; noSpecial: number[]; special: number[] }[] };
  teacherForced: TeacherForced;
  teacherForcedProse: TeacherForced;
  greedy: {
    cases: GreedyCase[];
  };
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

// With numerics 'llamacpp' the forward pass follows llama.cpp's CPU arithmetic operation by operation, so its
// greedy choices are llama.cpp's: the issue asks for >= 98% teacher-forced agreement, and this gives all positions
// (the logits are bit-identical to llama.cpp's; checked with the prebuilt libraries, see bench/peers/README.md).
// seedinfer's own arithmetic (the default) rounds activations to int8 like llama.cpp but sums in another order;
// last-bit differences then move some values across an int8 rounding step, and the two engines part at near-ties
// on ~4% of positions. Its tests below ask for >= 94% overall and >= 99% where llama.cpp's top choice leads the
// second by at least 0.1 in probability.
const llamaCppModelPromise = ensureDefaultModel().then((file) => Model.load(file, { numerics: 'llamacpp' }));

for (const key of ['teacherForced', 'teacherForcedProse'] as const) {
  test(`numerics 'llamacpp': teacher-forced next-token argmax equals llama.cpp's (${key})`, async (t) => {
    const model = await llamaCppModelPromise;
    t.is(model.info.numerics, 'llamacpp');
    const { tokens, argmax } = reference[key];
    t.true(tokens.length >= 256);
    const predicted = await model.createSession({ contextSize: 1024 }).predictNextTokens(tokens);
    const agreeing = predicted.filter((p, i) => p === argmax[i]).length;
    t.log(`numerics 'llamacpp': agreement with llama.cpp on ${agreeing} of ${tokens.length} positions`);
    t.true(agreeing / tokens.length >= 0.98, `${agreeing}/${tokens.length}`);
    t.deepEqual(predicted, argmax);
  });

  test(`teacher-forced next-token argmax agrees with llama.cpp (${key})`, async (t) => {
    const model = await modelPromise;
    const { tokens, argmax, top2Margin } = reference[key];
    t.true(tokens.length >= 256);
    const predicted = await model.createSession({ contextSize: 1024 }).predictNextTokens(tokens);
    t.is(predicted.length, tokens.length);
    const agree = predicted.filter((p, i) => p === argmax[i]).length / tokens.length;
    const confident = top2Margin.flatMap((margin, i) => (margin >= 0.1 ? [i] : []));
    const agreeConfident = confident.filter((i) => predicted[i] === argmax[i]).length / confident.length;
    t.log(`agreement with llama.cpp: ${(agree * 100).toFixed(2)}% of ${tokens.length} positions; ` +
      `${(agreeConfident * 100).toFixed(2)}% of the ${confident.length} where llama.cpp's margin >= 0.1`);
    t.true(agree >= 0.94, `agreement ${agree}`);
    t.true(agreeConfident >= 0.99, `agreement on confident positions ${agreeConfident}`);
  });
}

test('greedy continuations: llama.cpp\'s next token is ours at >= 90% of its greedy steps and >= 99% of the decisive ones', async (t) => {
  const model = await modelPromise;
  // Decisive steps as in the teacher-forced test (the code prompt's first step, for one, is a 0.06 near-tie
  // between a newline and "def").
  const { agreeing, steps, decisiveAgreeing, decisive } = await greedyStepAgreement(model, reference.greedy.cases);
  t.log(`agreement on llama.cpp's greedy steps: ${agreeing}/${steps}, decisive ones ${decisiveAgreeing}/${decisive}`);
  t.true(agreeing / steps >= 0.9);
  t.true(decisive >= 100 && decisiveAgreeing / decisive >= 0.99, `${decisiveAgreeing}/${decisive}`);
  const chat = reference.greedy.cases.find((c) => c.name === 'chat_template');
  if (!chat) return t.fail('fixture lacks the chat_template case');
  const result = await model.createSession().generateText(chat.promptTokens, { temperature: 0, maxTokens: 32 });
  t.deepEqual(result.tokenIds, chat.tokens);
});

test("numerics 'llamacpp': greedy generation (prompt batch, then one token per step) is llama.cpp's for all 5 prompts", async (t) => {
  const model = await llamaCppModelPromise;
  for (const c of reference.greedy.cases) {
    const result = await model.createSession({ contextSize: 512 }).generateText(c.promptTokens, { temperature: 0, maxTokens: c.tokens.length });
    t.deepEqual(result.tokenIds, c.tokens, c.name);
  }
});

test("numerics 'llamacpp': unsupported settings are typed errors and the model keeps working", async (t) => {
  const file = await ensureDefaultModel();
  const int8 = await t.throwsAsync(Model.load(file, { numerics: 'llamacpp', kvCache: { dtype: 'int8' } }));
  t.is((int8 as SeedinferError).code, 'INVALID_OPTION');
  t.regex(int8!.message, /f16 KV cache/);
  const converted = await t.throwsAsync(Model.load(file, { numerics: 'llamacpp', weights: 'q8_0' }));
  t.is((converted as SeedinferError).code, 'INVALID_OPTION');
  t.regex(converted!.message, /layer 0 has a Q8_0 matrix/);
  const model = await llamaCppModelPromise;
  const session = model.createSession();
  const pruned = await t.throwsAsync(session.generateText('Once upon a time', { maxTokens: 2, prefill: { strategy: 'lazyllm' } }));
  t.is((pruned as SeedinferError).code, 'INVALID_OPTION');
  const result = await session.generateText('Once upon a time', { maxTokens: 2, temperature: 0 });
  t.is(result.tokenIds.length, 2);
});

test('chat: "What is the capital of France?" is answered with Paris', async (t) => {
  const model = await modelPromise;
  // The template's own default system prompt adds a system turn when none is given.
  t.true(model.applyChatTemplate([{ role: 'user', content: 'Hi' }]).startsWith('<|im_start|>system\nYou are a helpful AI'));
  const prompt = model.applyChatTemplate([
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', content: 'What is the capital of France?' },
  ]);
  t.is(
    prompt,
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n',
  );
  const result = await model.createSession().generateText(prompt, { temperature: 0, maxTokens: 40 });
  t.regex(result.text, /Paris/);
  t.is(result.stopReason, 'eos');
});

test('predictNextTokens stops between chunks when its signal aborts mid-run (ABORTED), and the session stays usable', async (t) => {
  const model = await modelPromise;
  const session = model.createSession({ contextSize: 4096 });
  const tokens = Array.from({ length: 3000 }, (_, i) => 100 + ((i * 7919) % 40000));
  const controller = new AbortController();
  const started = Date.now();
  const pending = session.predictNextTokens(tokens, { signal: controller.signal });
  setTimeout(() => controller.abort(), 20);
  const error = (await t.throwsAsync(pending)) as SeedinferError;
  t.is(error.code, 'ABORTED');
  t.log(`aborted after ${Date.now() - started} ms, ${session.tokenCount} of 3000 positions kept`);
  t.true(session.tokenCount < 3000);
  const next = await session.predictNextTokens([200, 201]);
  t.is(next.length, 2);
});
