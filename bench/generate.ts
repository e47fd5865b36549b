// End-to-end generation speed on one model: prefill and decode tokens/s at 1 and 2 threads, median of N runs
// after a warm-up. Fixed token ids, so no tokenizer work is timed.
//
//   npm run bench:generate                      # default model, markdown table
//   npm run bench:generate -- --json --runs 5 --model <path>
//   npm run bench:generate -- --numerics seedinfer,llamacpp   # also time llama.cpp's arithmetic (numerics option)
import { Model, ensureDefaultModel } from '../src/index.js';
import { argument, median } from './cli-args.js';

interface Row {
  engine: string;
  numerics: 'seedinfer' | 'llamacpp';
  model: string;
  threads: number;
  promptTokens: number;
  decodeTokens: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  ttftMs: number;
}

const runs = Number(argument('runs') ?? 5);
const promptTokens = Number(argument('prompt') ?? 128);
const decodeTokens = Number(argument('decode') ?? 64);
const numericsList = (argument('numerics') ?? 'seedinfer').split(',') as Row['numerics'][];
const modelPath = argument('model') ?? (await ensureDefaultModel());
const rows: Row[] = [];
for (const [numerics, threads] of numericsList.flatMap((n) => [1, 2].map((t) => [n, t] as const))) {
  // Every run computes its whole prompt: no prefix reuse between runs (bench:kv measures that).
  const model = await Model.load(modelPath, { threads, kvCache: { prefixCaching: false }, numerics });
  // Ids spread over the vocabulary, skipping the low special tokens.
  const prompt = Array.from({ length: promptTokens }, (_, i) => 100 + ((i * 7919) % (model.info.vocabSize - 100)));
  const once = () =>
    model.createSession({ contextSize: promptTokens + decodeTokens + 1 }).generateText(prompt, {
      maxTokens: decodeTokens,
      temperature: 0,
      ignoreEos: true,
    });
  await once();
  const timings = [];
  for (let r = 0; r < runs; r++) timings.push((await once()).timings);
  rows.push({
    engine: 'seedinfer',
    numerics,
    model: model.info.path.split('/').pop() ?? model.info.path,
    threads,
    promptTokens,
    decodeTokens,
    prefillTokensPerSecond: median(timings.map((t) => t.prefillTokensPerSecond)),
    decodeTokensPerSecond: median(timings.map((t) => t.decodeTokensPerSecond)),
    ttftMs: median(timings.map((t) => t.ttftMs)),
  });
  model.dispose();
}

if (process.argv.includes('--json')) {
  console.log(JSON.stringify(rows, null, 2));
} else {
  console.log(`| numerics | threads | prompt | decoded | prefill tok/s | decode tok/s | TTFT ms |`);
  console.log(`|---|---:|---:|---:|---:|---:|---:|`);
  for (const r of rows) {
    console.log(
      `| ${r.numerics} | ${r.threads} | ${r.promptTokens} | ${r.decodeTokens} | ${r.prefillTokensPerSecond.toFixed(1)} | ${r.decodeTokensPerSecond.toFixed(1)} | ${r.ttftMs.toFixed(0)} |`,
    );
  }
  console.log(`\n${rows[0]?.model}, median of ${runs} runs after a warm-up, ${new Date().toISOString().slice(0, 10)}`);
}
