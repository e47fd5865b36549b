// K-quant (Q2_K .. Q6_K), IQ4_NL and IQ4_XS weights used as stored: random-weight copies of the default model (its
// ffn_down rows, 1536 wide, are whole 256-element super-blocks; the 576-wide matrices take llama.cpp's K-quant
// fallbacks, Q4_0 for Q2_K and Q3_K, IQ4_NL for IQ4_XS; IQ4_NL's 32-element blocks fit every matrix) load, say which kernels run, and give the logits of the
// same weights dequantised to f32.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import { native } from '../src/native.js';
import { tempDir } from './helpers/paths.js';

const tools = native();
const dir = tempDir();
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Relative L2 distance of two logit vectors, each taken about its own mean. */
function relativeError(a: Float32Array, b: Float32Array): number {
  const mean = (v: Float32Array) => v.reduce((s, x) => s + x, 0) / v.length;
  const [ma, mb] = [mean(a), mean(b)];
  let [diff, norm] = [0, 0];
  for (let i = 0; i < a.length; i++) {
    diff += (a[i] - ma - (b[i] - mb)) ** 2;
    norm += (b[i] - mb) ** 2;
  }
  return Math.sqrt(diff / norm);
}

const cases = [
  { format: 'q2_k', kQuant: 'Q2_K', fallback: 'Q4_0' },
  { format: 'q3_k', kQuant: 'Q3_K', fallback: 'Q4_0' },
  { format: 'q4_k', kQuant: 'Q4_K', fallback: 'Q5_0' },
  { format: 'q5_k', kQuant: 'Q5_K', fallback: 'Q5_1' },
  { format: 'q6_k', kQuant: 'Q6_K', fallback: 'Q8_0' },
  { format: 'iq4_nl', kQuant: 'IQ4_NL', fallback: undefined },
  { format: 'iq4_xs', kQuant: 'IQ4_XS', fallback: 'IQ4_NL' },
] as const;

for (const { format, kQuant, fallback } of cases) {
  test.serial(`${kQuant} weights load as stored, name their kernels and give the logits of their f32 values`, async (t) => {
    const file = path.join(dir, `smollm2-synthetic.${format}.gguf`);
    await tools.writeSyntheticModel(await ensureDefaultModel(), file, format, 5);
    const model = await Model.load(file, { threads: 2 });
    const { info } = model;
    if (fallback) {
      t.deepEqual(info.fileTensorFormats, { F32: 61, [kQuant]: 30, [fallback]: 181 });
      t.deepEqual(info.computeFormat.split(', ').sort(), [`${fallback} x int8 ×181`, `${kQuant} x int8 ×30`].sort());
    } else {
      t.deepEqual(info.fileTensorFormats, { F32: 61, [kQuant]: 211 });
      t.is(info.computeFormat, `${kQuant} x int8 ×211`);
    }
    t.regex(info.kernelIsa, new RegExp(`${kQuant} x int8: (avx512f|avx2|scalar)`));
    t.deepEqual(info.weightFallbacks, []);

    const reference = await Model.load(file, { threads: 2, weights: 'f32' });
    t.is(reference.info.computeFormat, 'f32 ×211');
    const prompt = model.tokenize('The quick brown fox jumps over the lazy dog, and then');
    const ours = model.createSession({ contextSize: 64 });
    const theirs = reference.createSession({ contextSize: 64 });
    await ours.predictNextTokens(prompt);
    await theirs.predictNextTokens(prompt);
    const [a, b] = [ours.lastLogits(), theirs.lastLogits()];
    if (!a || !b) return t.fail('no logits');
    // Only the int8 rounding of the activations separates them (f32 products take the activations as they are).
    const error = relativeError(a, b);
    t.log(`${kQuant}: logits within ${(error * 100).toFixed(2)}% of the f32 weights' (relative L2)`);
    t.true(error < 0.05, `relative error ${error}`);

    // A prompt token gets the bits it gets alone: batch of 12, then one token at a time.
    const stepwise = model.createSession({ contextSize: 64 });
    for (const token of prompt) await stepwise.predictNextTokens([token]);
    t.deepEqual(stepwise.lastLogits(), a);
    reference.dispose();
    model.dispose();
  });
}

test('weights: a K-quant or IQ4 converts at load with llama.cpp\'s quantisers and fallbacks', async (t) => {
  const file = await ensureDefaultModel();
  const stored = await Model.load(file, { threads: 2 });
  const prompt = stored.tokenize('The quick brown fox jumps over the lazy dog, and then');
  const logits = async (model: Model) => {
    const session = model.createSession({ contextSize: 64 });
    await session.predictNextTokens(prompt);
    const out = session.lastLogits();
    session.dispose();
    if (!out) throw new Error('no logits');
    return out;
  };
  const reference = await logits(stored);
  // SmolLM2's matrices are 576 wide except ffn_down (1536): 30 whole super-blocks, 181 fallbacks. The bounds sit
  // well above what was measured on 2026-12-07 (q2_k 79%, q3_k 47%, q4_k 19%, q5_k 17%, q6_k 6.3%, iq4_xs 31%:
  // requantising Q4_1 values, the 32-wide fallbacks weigh most) and below unrelated logits (~140%).
  const cases = [
    { weights: 'q2_k', type: 'Q2_K', fallback: 'Q4_0', bound: 1.0 },
    { weights: 'q3_k', type: 'Q3_K', fallback: 'Q4_0', bound: 0.65 },
    { weights: 'q4_k', type: 'Q4_K', fallback: 'Q5_0', bound: 0.3 },
    { weights: 'q5_k', type: 'Q5_K', fallback: 'Q5_1', bound: 0.3 },
    { weights: 'q6_k', type: 'Q6_K', fallback: 'Q8_0', bound: 0.1 },
    { weights: 'iq4_xs', type: 'IQ4_XS', fallback: 'IQ4_NL', bound: 0.45 },
  ] as const;
  for (const { weights, type, fallback, bound } of cases) {
    const model = await Model.load(file, { threads: 2, weights });
    t.deepEqual(model.info.computeFormat.split(', ').sort(), [`${fallback} x int8 ×181`, `${type} x int8 ×30`].sort());
    t.is(model.info.weightFallbacks.length, 181);
    t.regex(model.info.weightFallbacks[0], new RegExp(`not a multiple of 256, ${fallback} instead of ${type}`));
    const error = relativeError(await logits(model), reference);
    t.log(`${weights}: logits within ${(100 * error).toFixed(1)}% of the stored Q4_1 model's`);
    t.true(error < bound, `${weights}: ${error}`);
  }
  const error = await t.throwsAsync(Model.load(file, { weights: 'q7_k' as never }));
  t.is((error as SeedinferError).code, 'INVALID_OPTION');
  t.regex(error!.message, /q4_k/);
});
