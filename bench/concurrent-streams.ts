// Aggregate decode throughput of N concurrent generations on one model (`Promise.all` of N `generateText` calls,
// what a TypeScript server does), N = 1, 2, 4, 8 by default: concurrent sessions batch their decode steps
// (crates/seedinfer-engine/src/batcher.rs), so N streams should cost little more than one while decode is bound
// by reading the weights.
//
//   npm run bench:streams -- [--model <file.gguf or HF dir>] [--streams 1,2,4,8] [--tokens 128] [--runs 3] [--threads 2]
//
// Each stream has its own prompt (32 fixed pseudo-random token ids) and decodes greedily, never stopping at an
// end-of-generation token. Aggregate tok/s = N × tokens / wall time from the first request to the last
// completion (median of the runs); per-stream decode tok/s and TTFT are the medians of the streams' own timings.
import os from 'node:os';
import { Model, ensureDefaultModel } from '../src/index.js';

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const streams = option('streams', '1,2,4,8').split(',').map(Number);
const tokens = Number(option('tokens', '128'));
const runs = Number(option('runs', '3'));
const threads = Number(option('threads', String(Math.min(2, os.availableParallelism()))));
const modelPath = option('model', '') || (await ensureDefaultModel());
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

const model = await Model.load(modelPath, { threads });
console.log(`${modelPath}: ${model.info.computeFormat}, ${threads} threads, ${tokens} tokens per stream, median of ${runs}`);
console.log('| streams | aggregate tok/s | vs 1 stream | per-stream decode tok/s | per-stream TTFT ms |');
console.log('|---:|---:|---:|---:|---:|');
let single = 0;
for (const n of streams) {
  const aggregate: number[] = [];
  const decode: number[] = [];
  const ttft: number[] = [];
  for (let run = 0; run < runs; run++) {
    const sessions = Array.from({ length: n }, () => model.createSession({ contextSize: 256 }));
    const started = performance.now();
    const results = await Promise.all(
      sessions.map((s, i) =>
        s.generateText(
          Array.from({ length: 32 }, (_, t) => 100 + ((t * 37 + i * 101) % 5000)),
          { maxTokens: tokens, temperature: 0, ignoreEos: true },
        ),
      ),
    );
    aggregate.push((n * tokens) / ((performance.now() - started) / 1000));
    for (const r of results) {
      decode.push(r.timings.decodeTokensPerSecond);
      ttft.push(r.timings.ttftMs);
    }
    sessions.forEach((s) => s.dispose());
  }
  const a = median(aggregate);
  if (n === 1) single = a;
  console.log(`| ${n} | ${a.toFixed(1)} | ${single ? (a / single).toFixed(2) + '×' : '-'} | ${median(decode).toFixed(1)} | ${median(ttft).toFixed(0)} |`);
}
model.dispose();
