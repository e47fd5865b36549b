// Teacher-forced agreement of seedinfer with llama.cpp on any GGUF file: the reference is what
// make-reference.mjs wrote for that file (node-llama-cpp 3.22.1), and this prints, per passage, the share of
// positions where our next-token argmax is llama.cpp's, overall and where llama.cpp's top choice leads its second
// by >= 0.1 in probability (the decisive positions).
//
//   node bench/peers/make-reference.mjs --model smollm2.q4_k_m.gguf --out ref-q4_k_m.json   (in bench/peers)
//   node --import tsx bench/peers/agreement.ts --model smollm2.q4_k_m.gguf --reference ref-q4_k_m.json [--json]
//
// How K-quant files were made for issue 33: llama.cpp's own quantiser (PyPI llama-cpp-python 0.3.36,
// `llama_model_quantize`, allow_requantize) applied to the default model, ftype 15 (Q4_K_M), 17 (Q5_K_M), 18 (Q6_K).
import fs from 'node:fs';
import { Model } from '../../src/index.js';

interface TeacherForced {
  tokens: number[];
  argmax: number[];
  top2Margin: number[];
}

function argument(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const modelPath = argument('model');
const referencePath = argument('reference');
if (!modelPath || !referencePath) {
  console.error('usage: agreement.ts --model <file.gguf> --reference <reference.json> [--json]');
  process.exit(2);
}
const reference = JSON.parse(fs.readFileSync(referencePath, 'utf8')) as Record<string, TeacherForced>;
const model = await Model.load(modelPath);
const rows = [];
for (const key of ['teacherForced', 'teacherForcedProse']) {
  const { tokens, argmax, top2Margin } = reference[key];
  const predicted = await model.createSession({ contextSize: 1024 }).predictNextTokens(tokens);
  const agreeing = predicted.filter((p, i) => p === argmax[i]).length;
  const decisive = top2Margin.flatMap((margin, i) => (margin >= 0.1 ? [i] : []));
  const decisiveAgreeing = decisive.filter((i) => predicted[i] === argmax[i]).length;
  rows.push({ passage: key, positions: tokens.length, agreeing, decisive: decisive.length, decisiveAgreeing });
}
if (process.argv.includes('--json')) {
  console.log(JSON.stringify({ model: modelPath, computeFormat: model.info.computeFormat, rows }));
} else {
  console.log(`${modelPath}: ${model.info.computeFormat}`);
  for (const r of rows) {
    const percent = (a: number, b: number) => ((100 * a) / b).toFixed(2);
    console.log(
      `  ${r.passage}: ${r.agreeing}/${r.positions} (${percent(r.agreeing, r.positions)}%) overall, ` +
        `${r.decisiveAgreeing}/${r.decisive} (${percent(r.decisiveAgreeing, r.decisive)}%) where llama.cpp's margin >= 0.1`,
    );
  }
}
model.dispose();
