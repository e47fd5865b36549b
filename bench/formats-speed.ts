// Decode and prefill speed of one model in several weight formats, side by side in one run: the layer matrices of
// each row come from a seedinfer container (`quantizeModel`, cached in $SEEDINFER_CACHE/quantized; made on first use,
// SeedLM takes ~30-60 min for SmolLM2 on 2 cores), the embedding and output head stay as stored in every row.
// Runs alternate between formats (round robin) so that the shared machine's drift hits every row alike.
//
//   npm run bench:formats                                   # SmolLM2, q4_0 q4_1 seedlm4 seedlm3 q3_rtn, 2 threads
//   npm run bench:formats -- --formats q4_0,seedlm4 --threads 1 --runs 7 --json
import fs from 'node:fs';
import path from 'node:path';
import { Model, defaultCacheDir, ensureDefaultModel, quantizeModel } from '../src/index.js';
import type { QuantizeReport } from '../index.js';
import { argument, median } from './cli-args.js';

type Format = 'q8_0' | 'q4_0' | 'q4_1' | 'seedlm4' | 'seedlm3' | 'q3_rtn';

const formats = (argument('formats') ?? 'q4_0,q4_1,seedlm4,seedlm3,q3_rtn').split(',') as Format[];
const runs = Number(argument('runs') ?? 5);
const threads = Number(argument('threads') ?? 2);
const promptTokens = Number(argument('prompt') ?? 128);
const decodeTokens = Number(argument('decode') ?? 64);
const json = process.argv.includes('--json');
const source = await ensureDefaultModel();
const dir = path.join(defaultCacheDir(), 'quantized');

async function containerFor(format: Format): Promise<string> {
  const file = path.join(dir, `smollm2.${format}.gguf`);
  if (!fs.existsSync(file)) {
    process.stderr.write(`quantising the default model to ${format} -> ${file}\n`);
    const report: QuantizeReport = await quantizeModel(source, { format, out: file });
    process.stderr.write(`  ${report.secondsPerMillionWeights.toFixed(2)} s per million weights\n`);
  }
  return file;
}

interface Row {
  format: Format;
  weightBytes: number;
  computeFormat: string;
  prefill: number[];
  decode: number[];
}

const rows: Row[] = [];
const models: Model[] = [];
for (const format of formats) {
  const file = await containerFor(format);
  const model = await Model.load(file, { threads, kvCache: { prefixCaching: false } });
  models.push(model);
  rows.push({ format, weightBytes: model.info.weightBytes, computeFormat: model.info.computeFormat, prefill: [], decode: [] });
}
const vocab = models[0].info.vocabSize;
const prompt = Array.from({ length: promptTokens }, (_, i) => 100 + ((i * 7919) % (vocab - 100)));
const once = (model: Model) =>
  model.createSession({ contextSize: promptTokens + decodeTokens + 1 }).generateText(prompt, { maxTokens: decodeTokens, temperature: 0, ignoreEos: true });
for (const model of models) await once(model); // warm-up
for (let r = 0; r < runs; r++) {
  for (const [i, model] of models.entries()) {
    const { timings } = await once(model);
    rows[i].prefill.push(timings.prefillTokensPerSecond);
    rows[i].decode.push(timings.decodeTokensPerSecond);
  }
}
for (const m of models) m.dispose();

const base = rows.find((r) => r.format === 'q4_0') ?? rows[0];
const table = rows.map((r) => ({
  format: r.format,
  computeFormat: r.computeFormat,
  weightMiB: r.weightBytes / 2 ** 20,
  prefillTokensPerSecond: median(r.prefill),
  decodeTokensPerSecond: median(r.decode),
  decodeVsBase: median(r.decode) / median(base.decode),
  prefillVsBase: median(r.prefill) / median(base.prefill),
}));
if (json) {
  process.stdout.write(`${JSON.stringify({ date: new Date().toISOString(), threads, runs, promptTokens, decodeTokens, base: base.format, rows: table }, null, 2)}\n`);
} else {
  console.log(`SmolLM2-135M, ${threads} thread(s), prompt ${promptTokens}, decode ${decodeTokens}, median of ${runs} round-robin runs; ratios vs ${base.format}\n`);
  console.log(`| format | weights (MiB) | prefill tok/s | decode tok/s | decode vs ${base.format} | prefill vs ${base.format} |`);
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const r of table) {
    console.log(
      `| ${r.format} | ${r.weightMiB.toFixed(1)} | ${r.prefillTokensPerSecond.toFixed(0)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.decodeVsBase.toFixed(2)}x | ${r.prefillVsBase.toFixed(2)}x |`,
    );
  }
}
