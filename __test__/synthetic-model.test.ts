// The synthetic-model writer used by bench/peers/side-by-side.ts: a random-weight Q8_0 copy of the default model
// keeps its shape and tokenizer and runs.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, ensureDefaultModel } from '../src/index.js';
import { native } from '../src/native.js';
import { tempDir } from './helpers/paths.js';

const tools = native();

test('writeSyntheticModel: a Q8_0 copy of SmolLM2 with its shape and tokenizer loads and generates', async (t) => {
  const source = await ensureDefaultModel();
  const dir = tempDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const out = path.join(dir, 'smollm2-synthetic.q8_0.gguf');
  await tools.writeSyntheticModel(source, out, 'q8_0', 1);
  t.deepEqual(fs.readdirSync(dir), ['smollm2-synthetic.q8_0.gguf']);

  const sourceTensors = tools.ggufTensors(source);
  const tensors = tools.ggufTensors(out);
  t.deepEqual(
    tensors.map((x) => [x.name, x.shape]),
    sourceTensors.map((x) => [x.name, x.shape]),
  );
  t.is(tensors.find((x) => x.name === 'token_embd.weight')?.tensorType, 'Q8_0');

  const model = await Model.load(out, { threads: 2 });
  const { info } = model;
  t.deepEqual([info.layers, info.hiddenSize, info.intermediateSize, info.attentionHeads, info.kvHeads], [30, 576, 1536, 9, 3]);
  t.is(info.vocabSize, 49152);
  t.true(info.tiedEmbeddings);
  t.deepEqual(info.fileTensorFormats, { F32: 61, Q8_0: 211 });
  // The tokenizer came along.
  const original = await Model.load(source, { threads: 1 });
  t.deepEqual(model.tokenize('Hello, world!'), original.tokenize('Hello, world!'));
  original.dispose();

  const result = await model.createSession({ contextSize: 64 }).generateText([100, 200, 300, 400], {
    maxTokens: 8,
    temperature: 0,
    ignoreEos: true,
  });
  t.is(result.tokenIds.length, 8);
  t.true(result.tokenIds.every((id) => id >= 0 && id < info.vocabSize));
  model.dispose();
});

test('writeSyntheticModel: unknown formats and bad seeds are INVALID_OPTION; a missing source is MODEL_NOT_FOUND', async (t) => {
  const dir = tempDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const out = path.join(dir, 'x.gguf');
  const code = (f: () => unknown) => (t.throws(f) as Error & { code: string }).code;
  t.is(code(() => tools.writeSyntheticModel('/nonexistent.gguf', out, 'q3' as 'q8_0', 1)), 'INVALID_OPTION');
  t.is(code(() => tools.writeSyntheticModel('/nonexistent.gguf', out, 'q8_0', -1)), 'INVALID_OPTION');
  t.is(code(() => tools.writeSyntheticModel('/nonexistent.gguf', out, 'q8_0', 0.5)), 'INVALID_OPTION');
  const missing = await t.throwsAsync(tools.writeSyntheticModel('/nonexistent.gguf', out, 'q8_0', 1));
  t.is((missing as Error & { code: string }).code, 'MODEL_NOT_FOUND');
  t.regex(missing.message, /nonexistent.gguf/);
  t.deepEqual(fs.readdirSync(dir), []);
});
