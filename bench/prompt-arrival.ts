// What running streams feel when a long prompt arrives: N streams decode greedily; after a short while a session
// with a long prompt starts. Reports the streams' inter-token gaps while that prompt prefills (p50, p99, max), their
// tokens during it, and the long prompt's time to first token, for each `maxBatchTokens` asked for (chunked prefill
// through the batcher: crates/seedinfer-engine/src/batcher.rs).
//
//   npm run bench:arrival -- [--model <file>] [--streams 4] [--prompt 1500] [--max-batch-tokens 32,64,128] [--runs 3]
//
// Each run uses a different long prompt (no prefix-cache hits). Figures are medians over the runs.
import os from 'node:os';
import { Model, ensureDefaultModel } from '../src/index.js';
import { median } from './cli-args.js';

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const streams = Number(option('streams', '4'));
const promptTokens = Number(option('prompt', '1500'));
const budgets = option('max-batch-tokens', '32,64,128').split(',').map(Number);
const runs = Number(option('runs', '3'));
const threads = Number(option('threads', String(Math.min(2, os.availableParallelism()))));
const modelPath = option('model', '') || (await ensureDefaultModel());

const tokens = (seed: number, n: number) => Array.from({ length: n }, (_, t) => 100 + ((t * 37 + seed * 101) % 5000));
const percentile = (v: number[], p: number) => [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(p * v.length))];

console.log(`${modelPath}: ${streams} streams decoding, then a ${promptTokens}-token prompt; ${threads} threads; CPU ${os.cpus()[0]?.model}`);
console.log('| maxBatchTokens | gap before ms (p50) | gap during prefill p50 | p99 | max | stream tokens during prefill | long prompt TTFT ms |');
console.log('|---:|---:|---:|---:|---:|---:|---:|');
let seed = 1000;
for (const maxBatchTokens of budgets) {
  const model = await Model.load(modelPath, { threads, maxBatchTokens });
  const rows: number[][] = [];
  for (let run = 0; run < runs; run++) {
    const gaps: { at: number; gap: number }[] = [];
    const sessions = Array.from({ length: streams }, () => model.createSession({ contextSize: promptTokens + 600 }));
    const start = performance.now();
    const decoding = sessions.map((s, i) => {
      let last = 0;
      return s.generateText(tokens(i, 32), {
        maxTokens: 500,
        temperature: 0,
        ignoreEos: true,
        onToken: () => {
          const now = performance.now();
          if (last) gaps.push({ at: now - start, gap: now - last });
          last = now;
        },
      });
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const long = model.createSession({ contextSize: promptTokens + 16 });
    const arrived = performance.now() - start;
    let first = 0;
    await long.generateText(tokens(seed++, promptTokens), { maxTokens: 1, temperature: 0, onToken: () => (first ||= performance.now() - start) });
    await Promise.all(decoding);
    const before = gaps.filter((g) => g.at < arrived).map((g) => g.gap);
    const during = gaps.filter((g) => g.at > arrived && g.at <= first).map((g) => g.gap);
    rows.push([median(before), percentile(during, 0.5), percentile(during, 0.99), Math.max(...during), during.length, first - arrived]);
    sessions.forEach((s) => s.dispose());
    long.dispose();
  }
  const col = (i: number) => median(rows.map((r) => r[i])).toFixed(0);
  console.log(`| ${maxBatchTokens} | ${col(0)} | ${col(1)} | ${col(2)} | ${col(3)} | ${col(4)} | ${col(5)} |`);
  model.dispose();
}
process.exit(0);
