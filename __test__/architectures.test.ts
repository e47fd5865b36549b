// Llama 3.x, Qwen2/2.5 and Qwen3 through the JavaScript API: the tiny random-weight checkpoints of
// crates/seedinfer-engine/tests/data/architectures (made by scripts/make-architecture-fixtures.py) load and
// continue their prompts as transformers does, their GGUF conversions by llama.cpp's converter as llama.cpp does
// (scripts/make-architecture-gguf.py); a RoPE type we do not implement is UNSUPPORTED_CONFIG.
// (Logits within 1e-3 · std of transformers' are checked by the engine's tests/architectures.rs.)
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, SeedinferError } from '../src/index.js';
import { repoRoot, tempDir } from './helpers/paths.js';

const fixtures = path.join(repoRoot, 'crates', 'seedinfer-engine', 'tests', 'data', 'architectures');

function reference(name: string): { prompt: number[]; greedy: number[] } {
  return JSON.parse(fs.readFileSync(path.join(fixtures, name, 'reference.json'), 'utf8'));
}

for (const [name, architecture, ropeScaling] of [
  ['llama3', 'LlamaForCausalLM', 'llama3(factor 8, low 1, high 8, original 64)'],
  ['qwen2', 'Qwen2ForCausalLM', 'none'],
  ['qwen3', 'Qwen3ForCausalLM', 'none'],
  ['gemma3', 'Gemma3ForCausalLM', 'none'],
  ['phi3', 'Phi3ForCausalLM', 'none'],
] as const) {
  test(`${name}: loads and continues its prompt as transformers does`, async (t) => {
    const model = await Model.load(path.join(fixtures, name), { threads: 1, kvCache: { dtype: 'f32' } });
    t.is(model.info.architecture, architecture);
    t.is(model.info.slidingWindow, name === 'gemma3' ? '8 positions on 5 of 6 layers' : null);
    t.is(model.info.ropeScaling, ropeScaling);
    t.is(model.info.ropeStyle, 'half');
    const { prompt, greedy } = reference(name);
    const result = await model.createSession().generateText(prompt, { maxTokens: greedy.length, temperature: 0, ignoreEos: true });
    t.deepEqual(result.tokenIds, greedy);
    model.dispose();
  });
}

for (const [name, ropeStyle, ropeScaling] of [
  ['llama3', 'interleaved', 'rope_freqs(8 factors)'],
  ['qwen2', 'half', 'none'],
  ['qwen3', 'half', 'none'],
  ['gemma3', 'half', 'none'],
  ['phi3', 'half', 'none'],
] as const) {
  test(`${name}: the GGUF from llama.cpp's converter continues its prompt as llama.cpp does`, async (t) => {
    // llama.cpp ran gemma3 with an f32 cache (see scripts/make-architecture-gguf.py).
    const kvCache = name === 'gemma3' ? ({ dtype: 'f32' } as const) : undefined;
    const model = await Model.load(path.join(fixtures, name, 'model.gguf'), { threads: 1, kvCache });
    t.is(model.info.architecture, name === 'llama3' ? 'llama' : name);
    t.is(model.info.ropeStyle, ropeStyle);
    t.is(model.info.ropeScaling, ropeScaling);
    const { prompt } = reference(name);
    const { greedy } = JSON.parse(fs.readFileSync(path.join(fixtures, name, 'llamacpp.json'), 'utf8')) as { greedy: number[] };
    const result = await model.createSession().generateText(prompt, { maxTokens: greedy.length, temperature: 0, ignoreEos: true });
    t.deepEqual(result.tokenIds, greedy);
    model.dispose();
  });
}

test('an unimplemented rope_type is UNSUPPORTED_CONFIG naming the key', async (t) => {
  const dir = tempDir();
  for (const file of fs.readdirSync(path.join(fixtures, 'llama3'))) fs.copyFileSync(path.join(fixtures, 'llama3', file), path.join(dir, file));
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  config.rope_scaling = { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 64 };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const error = await t.throwsAsync(Model.load(dir, { threads: 1 }));
  t.true(error instanceof SeedinferError);
  t.is((error as SeedinferError).code, 'UNSUPPORTED_CONFIG');
  t.regex(error!.message, /rope_scaling\.rope_type/);
});
