// The default model (SmolLM2-135M-Instruct Q4_1 GGUF) against llama.cpp: tokenizer, teacher-forced next-token
// predictions, greedy continuations, and a chat answer. Reference: fixtures/llamacpp-smollm2.json, made by
// bench/peers/make-reference.mjs with node-llama-cpp 3.22.1.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, ensureDefaultModel } from '../src/index.js';
import { repoRoot } from './helpers/paths.js';

interface TeacherForced {
  tokens: number[];
  argmax: number[];
  top2Margin: number[];
}

interface Reference {
  tokenization: { cases: { name: string; text: string; noSpecial: number[]; special: number[] }[] };
  teacherForced: TeacherForced;
  teacherForcedProse: TeacherForced;
  greedy: {
    cases: { name: string; promptTokens: number[]; tokens: number[]; stepTop2Margin: number[]; text: string }[];
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

// Why not an exact match: llama.cpp and seedinfer both multiply Q4_1 weights with activations rounded to int8 per
// 32 values, and that rounding turns float differences of the last bit into whole quantisation steps. On this
// 135M model three correct implementations (llama.cpp, seedinfer, a float64 numpy reference with the same int8
// rounding) agree pairwise on 95-97% of positions; the disagreements are near-ties. So the test asks for >= 94%
// overall and >= 99% wherever llama.cpp's top choice leads the second by at least 0.1 in probability.
for (const key of ['teacherForced', 'teacherForcedProse'] as const) {
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
  let [agreeing, steps, decisiveAgreeing, decisive] = [0, 0, 0, 0];
  for (const c of reference.greedy.cases) {
    const session = model.createSession({ contextSize: 512 });
    // Teacher-force llama.cpp's own continuation and ask at every step whether we would have chosen it.
    const predicted = await session.predictNextTokens([...c.promptTokens, ...c.tokens.slice(0, -1)]);
    const ours = predicted.slice(c.promptTokens.length - 1);
    // Decisive: llama.cpp's top choice leads its second by >= 0.1 in probability, as in the teacher-forced test
    // (the code prompt's first step, for one, is a 0.06 near-tie between a newline and "def").
    c.tokens.forEach((token, i) => {
      steps += 1;
      agreeing += Number(ours[i] === token);
      if (c.stepTop2Margin[i] >= 0.1) {
        decisive += 1;
        decisiveAgreeing += Number(ours[i] === token);
      }
    });
  }
  t.log(`agreement on llama.cpp's greedy steps: ${agreeing}/${steps}, decisive ones ${decisiveAgreeing}/${decisive}`);
  t.true(agreeing / steps >= 0.9);
  t.true(decisive >= 100 && decisiveAgreeing / decisive >= 0.99, `${decisiveAgreeing}/${decisive}`);
  const chat = reference.greedy.cases.find((c) => c.name === 'chat_template');
  if (!chat) return t.fail('fixture lacks the chat_template case');
  const result = await model.createSession().generateText(chat.promptTokens, { temperature: 0, maxTokens: 32 });
  t.deepEqual(result.tokenIds, chat.tokens);
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
