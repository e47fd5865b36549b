// The KV-cache manager's effect, per KV dtype (f32, f16, int8), on one model:
//   - KV bytes per token;
//   - TTFT of a second request that shares a 1,000-token system prompt with the first (prefix reuse), against the
//     first request's TTFT and against the same second request with prefix caching off;
//   - how many concurrent sessions holding a 1,000-token prompt fit in a fixed budget;
//   - decode tokens/s at 2K context (median of N runs).
// Fixed token ids, so no tokenizer work is timed.
//
//   npm run bench:kv                                     # default model, markdown tables
//   npm run bench:kv -- --json --runs 3 --threads 2 --model <path> --budget-mib 64 --context 2048
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import { argument, median } from './cli-args.js';

const DTYPES = ['f32', 'f16', 'int8'] as const;
type Dtype = (typeof DTYPES)[number];

const runs = Number(argument('runs') ?? 3);
const threads = Number(argument('threads') ?? 2);
const budgetMib = Number(argument('budget-mib') ?? 64);
const longContext = Number(argument('context') ?? 2048);
const systemTokens = 1000;
const suffixTokens = 24;
const modelPath = argument('model') ?? (await ensureDefaultModel());

/** `length` token ids spread over the vocabulary (skipping the low special ids), different per `seed`. */
function tokens(length: number, vocab: number, seed: number): number[] {
  return Array.from({ length }, (_, i) => 100 + ((i * 7919 + seed * 104729) % (vocab - 100)));
}

interface Row {
  dtype: Dtype;
  kvBytesPerToken: number;
  firstTtftMs: number;
  secondTtftMs: number;
  secondTtftNoReuseMs: number;
  reusedPromptTokens: number;
  sessionsInBudget: number;
  decodeTokensPerSecondAtLongContext: number;
}

const rows: Row[] = [];
for (const dtype of DTYPES) {
  const load = (prefixCaching: boolean, budgetBytes?: number) =>
    Model.load(modelPath, { threads, kvCache: { dtype, prefixCaching, budgetBytes } });

  // Prefix reuse: the first request computes the system prompt; the second shares it and differs after it.
  const ttft = async (prefixCaching: boolean) => {
    const first: number[] = [];
    const second: number[] = [];
    let reused = 0;
    for (let r = 0; r < runs; r++) {
      const model = await load(prefixCaching);
      const system = tokens(systemTokens, model.info.vocabSize, 1);
      const ask = async (seed: number) =>
        model
          .createSession()
          .generateText([...system, ...tokens(suffixTokens, model.info.vocabSize, seed)], { maxTokens: 1, temperature: 0 });
      first.push((await ask(2)).timings.ttftMs);
      const b = await ask(3);
      second.push(b.timings.ttftMs);
      reused = b.timings.reusedPromptTokens;
      model.dispose();
    }
    return { first: median(first), second: median(second), reused };
  };
  const withReuse = await ttft(true);
  const withoutReuse = await ttft(false);

  // Capacity: sessions with distinct 1,000-token prompts until the budget refuses one.
  const budgetModel = await load(false, budgetMib * 2 ** 20);
  const sessions = [];
  for (;;) {
    const session = budgetModel.createSession();
    try {
      await session.generateText(tokens(systemTokens, budgetModel.info.vocabSize, 10 + sessions.length), { maxTokens: 1, temperature: 0 });
      sessions.push(session);
    } catch (error) {
      if (!(error instanceof SeedinferError && error.code === 'KV_BUDGET_EXCEEDED')) throw error;
      break;
    }
  }
  const sessionsInBudget = sessions.length;
  for (const s of sessions) s.dispose();
  const kvBytesPerToken = budgetModel.info.kvBytesPerToken;
  budgetModel.dispose();

  // Decode speed with a long context.
  const model = await load(false);
  const prompt = tokens(longContext - 65, model.info.vocabSize, 7);
  const decode: number[] = [];
  for (let r = 0; r <= runs; r++) {
    const result = await model
      .createSession({ contextSize: longContext })
      .generateText(prompt, { maxTokens: 64, temperature: 0, ignoreEos: true });
    if (r > 0) decode.push(result.timings.decodeTokensPerSecond);
  }
  model.dispose();

  rows.push({
    dtype,
    kvBytesPerToken,
    firstTtftMs: withReuse.first,
    secondTtftMs: withReuse.second,
    secondTtftNoReuseMs: withoutReuse.second,
    reusedPromptTokens: withReuse.reused,
    sessionsInBudget,
    decodeTokensPerSecondAtLongContext: median(decode),
  });
}

if (process.argv.includes('--json')) {
  console.log(JSON.stringify({ model: modelPath, threads, runs, budgetMib, longContext, rows }, null, 2));
} else {
  const f32 = rows[0];
  console.log(
    `| KV dtype | bytes/token | TTFT 1st (${systemTokens}+${suffixTokens} tok) ms | TTFT 2nd, shared prefix ms | 2nd without reuse ms | reused tokens | sessions in ${budgetMib} MiB | decode tok/s @${longContext} | vs f32 |`,
  );
  console.log(`|---|---:|---:|---:|---:|---:|---:|---:|---:|`);
  for (const r of rows) {
    console.log(
      `| ${r.dtype} | ${r.kvBytesPerToken.toLocaleString('en-US')} | ${r.firstTtftMs.toFixed(0)} | ${r.secondTtftMs.toFixed(0)} | ${r.secondTtftNoReuseMs.toFixed(0)} | ${r.reusedPromptTokens} | ${r.sessionsInBudget} | ${r.decodeTokensPerSecondAtLongContext.toFixed(1)} | ${(r.decodeTokensPerSecondAtLongContext / f32.decodeTokensPerSecondAtLongContext).toFixed(2)}× |`,
    );
  }
  console.log(
    `\n${modelPath.split('/').pop()}, ${threads} threads, medians of ${runs} runs, ${new Date().toISOString().slice(0, 10)}`,
  );
}
