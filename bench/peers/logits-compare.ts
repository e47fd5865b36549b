// seedinfer's logits against llama.cpp's (llamacpp-logits.py's JSON for the same file): the relative L2 error of
// the logits after the last token (each vector about its own mean) and the share of positions whose argmax agrees.
//
//   node --import tsx bench/peers/logits-compare.ts --model <file.gguf or HF dir> --reference <logits.json> [--kv f32]
//
// The reference comes from llamacpp-logits.py (llama.cpp on the same GGUF) or transformers-logits.py (transformers
// on the same Hugging Face directory, in f32: compare with --kv f32).
import fs from 'node:fs';
import { Model } from '../../src/index.js';

function argument(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const [modelPath, referencePath] = [argument('model'), argument('reference')];
if (!modelPath || !referencePath) {
  console.error('usage: logits-compare.ts --model <file.gguf or HF dir> --reference <logits.json> [--kv f32|f16|int8]');
  process.exit(2);
}
const reference = JSON.parse(fs.readFileSync(referencePath, 'utf8')) as { tokens: number[]; argmax: number[]; lastLogits: number[] };
const kv = (argument('kv') ?? 'f16') as 'f32' | 'f16' | 'int8';
const model = await Model.load(modelPath, { kvCache: { dtype: kv } });
const session = model.createSession({ contextSize: reference.tokens.length + 16 });
const predicted = await session.predictNextTokens(reference.tokens);
const ours = session.lastLogits();
if (!ours) throw new Error('no logits');
const theirs = reference.lastLogits;
const mean = (v: ArrayLike<number>) => Array.from(v).reduce((s, x) => s + x, 0) / v.length;
const [mo, mt] = [mean(ours), mean(theirs)];
let [diff, norm, maxAbs] = [0, 0, 0];
for (let i = 0; i < theirs.length; i++) {
  const d = ours[i] - mo - (theirs[i] - mt);
  diff += d * d;
  norm += (theirs[i] - mt) ** 2;
  maxAbs = Math.max(maxAbs, Math.abs(ours[i] - theirs[i]));
}
const agreeing = predicted.filter((p, i) => p === reference.argmax[i]).length;
console.log(
  `${modelPath}: ${model.info.computeFormat}\n` +
    `  last-position logits: relative L2 error ${(100 * Math.sqrt(diff / norm)).toPrecision(2)}%, max |difference| ${maxAbs.toPrecision(2)} ` +
    `(logit spread ${Math.sqrt(norm / theirs.length).toFixed(4)})\n` +
    `  argmax agrees at ${agreeing}/${reference.tokens.length} positions`,
);
model.dispose();
